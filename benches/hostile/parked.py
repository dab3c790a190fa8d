"""`parked`: MultiStudio sessions parked by connections that end without a close frame, against
honest clients of every dialect.

The attacker opens BATCH connections, each sending HELLO and 4 JOIN_ROOM (a shared "popular"
room and 3 rooms of its own), waits for their answers, and resets them all (no close frame, so
the server parks each session with its rooms for --reconnect-window); again until the attack
ends. Every HONEST_EVERY_S one honest client per dialect joins, alternately the popular room
and a fresh one, from HONEST_SOURCE: another address, so that the per-address limit, which is
the attacker's, is not theirs."""

import json
import socket
import time

from .wire import (Frames, Reader, close_code, close_frame, connect, frame, handshake,
                   read_until, reset, rpc, scrape_metrics, studio, tally)

BATCH = 400
HONEST_EVERY_S = 0.5
HONEST_SOURCE = "127.0.0.2"
DIALECTS = ("scratch", "rpc", "studio")


def start(attack):
    attack.spawn(park_sessions, attack.port, attack.start, attack.stop_at, attack.results)
    attack.spawn(honest_clients, attack.port, attack.start, attack.stop_at, attack.results)

    def wait():
        observed = attack.collect()
        observed["server_at_end"] = scrape_metrics(attack.port, [
            "stratus_parked_sessions", "stratus_rooms", "stratus_connections_open"])
        return observed

    return wait


def park_sessions(port, start, stop_at, out):
    hellos = joined = opened = failed = unanswered = batches = 0
    errors, closes = {}, {}
    buf = bytearray(1 << 16)
    while time.time() < stop_at:
        socks = []
        for i in range(BATCH):
            n = batches * BATCH + i
            messages = studio({"kind": "HELLO", "username": "p%d" % n})
            messages += studio({"kind": "JOIN_ROOM", "room": "popular", "rid": "0"})
            for k in range(1, 4):
                messages += studio({"kind": "JOIN_ROOM", "room": "r%d_%d" % (n, k), "rid": str(k)})
            try:
                socks.append(connect(port, messages, path="/ws/multistudio", timeout=5))
                opened += 1
            except OSError:
                failed += 1
        deadline = time.time() + 5
        for s in socks:
            frames = Frames()
            read_until(s, frames, lambda f: f.texts() >= 5 or f.closed(), deadline, buf)
            for op, _, prefix in frames.done:
                text = prefix.decode("utf-8", "replace")
                if op == 8:
                    tally(closes, "close %d" % close_code(prefix))
                elif text.startswith('{"kind":"HELLO"'):
                    hellos += 1
                elif text.startswith('{"kind":"JOINED_ROOM"'):
                    joined += 1
                elif op == 1:
                    try:
                        message = json.loads(text)
                        tally(errors, "%s/%s" % (message["kind"], message["why"]))
                    except (ValueError, KeyError):
                        tally(errors, "other")
            if not frames.done:
                unanswered += 1
        for s in socks:
            reset(s)
        batches += 1
    out.put({"parked_attacker": {
        "batches": batches, "connections": opened, "connect_failed": failed,
        "unanswered": unanswered, "hellos": hellos, "rooms_joined": joined,
        "errors": errors, "closes": closes, "elapsed_s": round(time.time() - start, 1),
    }})


def honest_clients(port, start, stop_at, out):
    results = {}
    n = 0
    while time.time() < stop_at:
        tick = time.time()
        kind = "popular" if n % 2 == 0 else "fresh"
        room = "popular" if kind == "popular" else "honest%d" % n
        for dialect in DIALECTS:
            at = round(time.time() - start, 1)
            outcome = honest_join(port, dialect, room, "h%d%s" % (n, dialect[:2]))
            entry = results.setdefault("%s_%s" % (dialect, kind), {
                "tries": 0, "joined": 0, "refused": {}, "first_refused_s": None,
                "last_joined_s": None})
            entry["tries"] += 1
            if outcome == "joined":
                entry["joined"] += 1
                entry["last_joined_s"] = at
            else:
                tally(entry["refused"], outcome)
                if entry["first_refused_s"] is None:
                    entry["first_refused_s"] = at
        n += 1
        time.sleep(max(0, HONEST_EVERY_S - (time.time() - tick)))
    out.put({"honest": results})


def honest_join(port, dialect, room, user):
    """One join, then a close frame: "joined", or what the server said instead."""
    if dialect == "scratch":
        # A pong after the handshake means the handshake was taken (a refusal closes first).
        path, request = "/", handshake(room, user) + frame(b"?", opcode=9)
    elif dialect == "rpc":
        path, request = "/ws/world/" + room, rpc("authenticate", 1, json.dumps({"username": user}))
    else:
        path = "/ws/multistudio"
        request = studio({"kind": "HELLO", "username": user})
        request += studio({"kind": "JOIN_ROOM", "room": room, "rid": "j"})
    try:
        s = connect(port, request, path=path, source=HONEST_SOURCE, timeout=3)
    except OSError as e:
        return "connect failed: %s" % e.__class__.__name__
    said = ""
    try:
        reader = Reader(s)
        reader.skip_head()
        while True:
            event = reader.next_event()
            if event == ("pong",):
                return "joined"
            if isinstance(event, tuple):
                return said + "close %d" % event[1]
            if event.startswith('["authenticated"') or event.startswith('{"kind":"JOINED_ROOM"'):
                return "joined"
            if event.startswith('{"kind":"HELLO"'):
                continue
            message = json.loads(event)
            if isinstance(message, list):
                said = "%s, " % message[-1].get("code", "?")
            else:
                said = "%s/%s, " % (message.get("kind"), message.get("why"))
                if message.get("rid") == "j":
                    return said[:-2]
    except socket.timeout:
        return said + "no answer in 3 s"
    except (EOFError, OSError) as e:
        return said + "connection ended (%s)" % e.__class__.__name__
    finally:
        try:
            s.sendall(close_frame())
        except OSError:
            pass
        s.close()
