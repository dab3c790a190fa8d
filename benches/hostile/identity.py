"""`identity`: a borrowed client_id (run with --max-connections-per-user 1).

An honest array-RPC client authenticates as username "alice" in room "ident" and stays; when it
is told connection.replaced or closed it logs in again at once, as a client that wants to stay
online would. Every 0.5 s the attacker authenticates with {"client_id": "alice"} on a new
connection and closes its previous one."""

import json
import socket
import time

from .wire import Reader, close_frame, connect, rpc, tally

SERVER_ARGS = ["--max-connections-per-user", "1"]
ATTACK_EVERY_S = 0.5


def start(attack):
    attack.spawn(honest, attack.port, attack.stop_at, attack.results)
    time.sleep(0.3)
    attack.spawn(attacker, attack.port, attack.stop_at, attack.results)
    return attack.collect


def honest(port, stop_at, out):
    logins, replaced, closed, errors = 0, 0, {}, {}
    while time.time() < stop_at:
        try:
            s = connect(port, rpc("authenticate", 1, '{"username":"alice"}'),
                        path="/ws/world/ident", timeout=3)
        except OSError:
            tally(closed, "connect failed")
            time.sleep(0.05)
            continue
        reader = Reader(s)
        try:
            reader.skip_head()
            while time.time() < stop_at:
                s.settimeout(max(0.01, min(0.2, stop_at - time.time())))
                try:
                    event = reader.next_event()
                except socket.timeout:
                    continue
                if isinstance(event, tuple):
                    if event[0] == "close":
                        tally(closed, "close %d" % event[1])
                        break
                    continue
                if event.startswith('["authenticated"'):
                    logins += 1
                elif '"connection.replaced"' in event:
                    replaced += 1
                    break
                elif event.startswith('["error"'):
                    tally(errors, json.loads(event)[-1].get("code", "?"))
        except (EOFError, OSError):
            tally(closed, "ended without close frame")
        try:
            s.sendall(close_frame())
        except OSError:
            pass
        s.close()
    out.put({"identity_honest": {
        "logins": logins, "told_replaced": replaced, "closed": closed, "other_errors": errors}})


def attacker(port, stop_at, out):
    logins, refused, previous = 0, {}, None
    while time.time() < stop_at:
        tick = time.time()
        s = None
        try:
            s = connect(port, rpc("authenticate", 1, '{"client_id":"alice"}'),
                        path="/ws/world/ident", timeout=3)
            reader = Reader(s)
            reader.skip_head()
            event = reader.next_event()
            if isinstance(event, str) and event.startswith('["authenticated"'):
                logins += 1
            else:
                tally(refused, str(event)[:60])
        except (EOFError, OSError):
            tally(refused, "connection ended")
            if s is not None:
                s.close()
            s = None
        if previous is not None:
            try:
                previous.sendall(close_frame())
            except OSError:
                pass
            previous.close()
        previous = s
        time.sleep(max(0, ATTACK_EVERY_S - (time.time() - tick)))
    if previous is not None:
        previous.close()
    out.put({"identity_attacker": {"logins": logins, "refused": refused}})
