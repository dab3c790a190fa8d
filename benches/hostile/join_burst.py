"""`join-burst`: rounds of BURST_JOINS Scratch joins to the large room by clients that read
their whole snapshot, then leave (reset); a round starts 0.5 s after the previous one ended.

`joiners` (round1) is the non-reading variant: those clients' sockets take a few KB each, so it
does not measure the copying of snapshots into sockets that take them."""

import selectors
import time

from .wire import Frames, connect, handshake, reset

BURST_JOINS = 100
ROUND_LIMIT_S = 30


def start(attack):
    attack.spawn(join_rounds, attack.port, attack.stop_at, attack.results)
    return attack.collect


def join_rounds(port, stop_at, out):
    rounds, buf = [], bytearray(1 << 20)
    view = memoryview(buf)
    r = 0
    while time.time() < stop_at:
        t0 = time.time()
        deadline = t0 + ROUND_LIMIT_S
        selector = selectors.DefaultSelector()
        socks = []
        for i in range(BURST_JOINS):
            try:
                s = connect(port, handshake("big", "b%d_%d" % (r, i)), timeout=5)
            except OSError:
                continue
            s.setblocking(False)
            socks.append(s)
            selector.register(s, selectors.EVENT_READ, Frames())
        waiting, complete = len(socks), 0
        while waiting and time.time() < deadline:
            for key, _ in selector.select(timeout=max(0.01, deadline - time.time())):
                try:
                    n = key.fileobj.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                frames = key.data
                if n:
                    frames.feed(view[:n])
                if n == 0 or frames.texts() >= 1 or frames.closed():
                    complete += 1 if frames.texts() >= 1 else 0
                    waiting -= 1
                    selector.unregister(key.fileobj)
        selector.close()
        for s in socks:
            reset(s)
        rounds.append({"s": round(time.time() - t0, 2), "snapshots": complete})
        r += 1
        time.sleep(0.5)
    out.put({"join_rounds": rounds})
