"""`garbage`: one connection sends BYTES random bytes (no CR or LF, fixed seed) as its request
head; how long until the server answers or closes, and what it says. Waits up to WAIT_S,
whatever the window."""

import random
import socket
import time

BYTES = 2000
WAIT_S = 30


def start(attack):
    attack.spawn(probe, attack.port, attack.results)
    return attack.collect


def probe(port, out):
    rnd = random.Random(20)
    junk = bytes(b for b in (rnd.randrange(256) for _ in range(3 * BYTES))
                 if b not in (10, 13))[:BYTES]
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(WAIT_S)
    t0 = time.time()
    s.sendall(junk)
    try:
        data = s.recv(4096)
        answer = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed, no answer"
    except socket.timeout:
        answer = "nothing within %d s" % WAIT_S
    except OSError as e:
        answer = "connection ended (%s)" % e.__class__.__name__
    s.close()
    out.put({"garbage": {"bytes": len(junk), "answer": answer,
                         "answer_after_s": round(time.time() - t0, 3)}})
