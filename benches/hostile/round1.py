"""The attacks of issue 10, all valid input under default limits, against the large room."""

import os
import socket
import struct
import threading
import time

from .harness import LARGE_VARS, VALUE
from .wire import UPGRADE, connect, frame, handshake, setmsg


def churn(attack):
    """2 processes looping connect -> upgrade + join the large room -> read a bit -> reset."""
    for _ in range(2):
        attack.spawn(_churn, attack.port, attack.stop_at)
    return lambda: [p.join() for p in attack.processes] and {}


def _churn(port, stop_at):
    os.sched_setaffinity(0, {1})
    request = UPGRADE + handshake("big", "churn")
    linger = struct.pack("ii", 1, 0)
    while time.time() < stop_at:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            s.settimeout(2)
            s.recv(4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()
        except OSError:
            pass


def stuck(attack):
    """20 members of the large room that never read, each at a different version."""
    port, held = attack.port, attack.held
    changer = connect(port, handshake("big", "changer"))
    for i in range(20):
        held.append(connect(port, handshake("big", "stuck%d" % i), rcvbuf=4096))
        time.sleep(0.05)
        changer.sendall(setmsg("☁ v%d" % i, '"%d"' % i))
    # A quarter of the room changes once more (within one client's byte burst): each
    # stuck member is behind by 3.2 MB.
    changer.sendall(b"".join(setmsg("☁ v%d" % i, VALUE) for i in range(LARGE_VARS // 4)))
    held.append(changer)
    return lambda: attack.until_stop() or {}


def joiners(attack):
    """5 bursts of 100 joins to the large room by clients that never read."""

    def bursts():
        for b in range(5):
            for i in range(100):
                attack.held.append(
                    connect(attack.port, handshake("big", "j%d_%d" % (b, i)), rcvbuf=4096))
            time.sleep(attack.window / 6)

    t = threading.Thread(target=bursts)
    t.start()
    return lambda: (t.join(), attack.until_stop(), {})[2]


def pings(attack):
    """100 clients that never read, each sending 450 pings/s of 125 bytes."""
    clients = [connect(attack.port, handshake("big", "p%d" % i), rcvbuf=4096) for i in range(100)]
    attack.held.extend(clients)
    ping = frame(b"p" * 125, opcode=9)

    def flood():
        # 450 pings/s each: 9 pings every 20 ms.
        batch = ping * 9
        while time.time() < attack.stop_at:
            t0 = time.time()
            for c in clients:
                try:
                    c.sendall(batch)
                except OSError:
                    pass
            time.sleep(max(0, 0.02 - (time.time() - t0)))

    t = threading.Thread(target=flood)
    t.start()
    return lambda: t.join() or {}


def large(attack):
    """300 connections each sending one 1 MB message, then idle."""
    message = b"\n".join(
        ('{"method":"set","name":"☁ x","value":%s}' % VALUE).encode() for _ in range(10)
    )
    for i in range(300):
        s = connect(attack.port, handshake("large%d" % (i % 10), "l%d" % i) + frame(message))
        attack.held.append(s)
    return lambda: attack.until_stop() or {}
