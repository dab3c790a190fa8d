"""`unread-get`, `get-rate`, `get-rate-studio`: full-state replies on demand in the large room.

A set before each request changes the room, so no request can be answered from a rendering
made for an earlier version."""

import json
import socket
import threading
import time

from .wire import Frames, connect, read_until, reset, rpc, scrape_metrics, studio

UNREAD_GETTERS = 40
GET_CONNECTIONS = 4
GET_PAIRS_PER_S = 20
# A reply this large is a rendering of the whole large room.
FULL_STATE_BYTES = 1 << 20


def join_large_room(port, dialect, user, rcvbuf=None):
    """A member of the large room that has read its whole join reply, and its `Frames`."""
    if dialect == "rpc":
        s = connect(port, rpc("authenticate", 1, json.dumps({"username": user})),
                    path="/ws/world/big", rcvbuf=rcvbuf)
        wanted = 1
    else:
        s = connect(port, studio({"kind": "HELLO", "username": user})
                    + studio({"kind": "JOIN_ROOM", "room": "big"}),
                    path="/ws/multistudio", rcvbuf=rcvbuf)
        wanted = 2
    frames = Frames()
    if not read_until(s, frames, lambda f: f.texts() >= wanted, time.time() + 30,
                      bytearray(1 << 20)):
        s.close()
        raise OSError("no join reply from the large room")
    frames.done.clear()
    return s, frames


def unread_get(attack):
    """UNREAD_GETTERS array-RPC members (receive buffer 64 KiB: the kernel takes little of a
    reply) each read their join reply, send cloud.set + cloud.get once, and never read again."""
    t0 = time.time()
    getters = 0
    for i in range(UNREAD_GETTERS):
        try:
            s, _ = join_large_room(attack.port, "rpc", "g%d" % i, rcvbuf=65536)
        except OSError:
            continue
        getters += 1
        s.sendall(rpc("cloud.set", 2, '{"name":"☁ v0","value":"%d"}' % i)
                  + rpc("cloud.get", 3, "{}"))
        attack.held.append(s)
    took = round(time.time() - t0, 2)
    return lambda: attack.until_stop() or {"unread_getters": getters, "getters_setup_s": took}


def get_rate(dialect):
    def start(attack):
        attack.spawn(ask_for_renders, attack.port, dialect, attack.stop_at, attack.release,
                     attack.results)
        return attack.collect
    return start


def ask_for_renders(port, dialect, stop_at, release, out):
    """GET_CONNECTIONS members asking for the whole room GET_PAIRS_PER_S times a second each
    (array-RPC: cloud.set + cloud.get; MultiStudio: SET + JOIN_ROOM of the room joined),
    reading everything. A pair is not queued while the previous one is still unsent (the
    server stopped reading): it counts as skipped. At stop_at they stop reading and sending;
    they are reset once the bystander's window is over (`release`), and then the time the
    server takes to answer a /metrics request is measured: it first works through the
    requests the reset connections left unread."""
    members = [join_large_room(port, dialect, "r%d" % i) for i in range(GET_CONNECTIONS)]
    received = [[0, 0] for _ in members]  # bytes, full-state replies
    sent = [[0, 0] for _ in members]  # pairs sent, pairs skipped
    period = 1.0 / GET_PAIRS_PER_S
    start = time.time()

    def pair(n):
        if dialect == "rpc":
            return (rpc("cloud.set", 2 * n, '{"name":"☁ v0","value":"%d"}' % n)
                    + rpc("cloud.get", 2 * n + 1, "{}"))
        return (studio({"kind": "SET", "room": "big", "name": "☁ v0", "value": str(n)})
                + studio({"kind": "JOIN_ROOM", "room": "big"}))

    def send(k, s):
        # Its own descriptor, so that its timeout is not the reader's.
        w = s.dup()
        w.settimeout(0.05)
        pending, n, due = b"", 0, time.time()
        while time.time() < stop_at:
            now = time.time()
            if now >= due:
                due = max(due + period, now - period)
                if pending:
                    sent[k][1] += 1
                else:
                    n += 1
                    pending = pair(n)
                    sent[k][0] += 1
            if pending:
                try:
                    pending = pending[w.send(pending):]
                except socket.timeout:
                    pass
                except OSError:
                    break
            else:
                time.sleep(max(0, min(due, stop_at) - time.time()))
        w.close()

    def read(k, s, frames):
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while time.time() < stop_at:
            s.settimeout(max(0.01, min(0.2, stop_at - time.time())))
            try:
                n = s.recv_into(buf)
            except socket.timeout:
                continue
            except OSError:
                return
            if n == 0:
                return
            received[k][0] += n
            frames.feed(view[:n])
            received[k][1] += sum(1 for _, size, _ in frames.done if size >= FULL_STATE_BYTES)
            frames.done.clear()

    threads = []
    for k, (s, frames) in enumerate(members):
        threads.append(threading.Thread(target=send, args=(k, s)))
        threads.append(threading.Thread(target=read, args=(k, s, frames)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    release.wait(timeout=120)
    for s, _ in members:
        reset(s)
    t0 = time.time()
    answered = scrape_metrics(port, ["stratus_rooms"], timeout=60)
    answer_ms = round((time.time() - t0) * 1000, 1) if answered else None
    replies = sum(r[1] for r in received)
    out.put({"get_rate": {
        "dialect": dialect, "connections": len(members), "pairs_per_s_each": GET_PAIRS_PER_S,
        "pairs_sent": sum(p[0] for p in sent), "pairs_skipped": sum(p[1] for p in sent),
        "full_state_replies": replies,
        "full_state_replies_per_s": round(replies / elapsed, 1),
        "attacker_read_mb_per_s": round(sum(r[0] for r in received) / elapsed / 1e6, 1),
        "metrics_answer_after_reset_ms": answer_ms,
    }})
