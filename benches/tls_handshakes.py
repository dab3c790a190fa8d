#!/usr/bin/env python3
"""TLS handshakes per second against a local stratus: PORT SERVER_PID [COUNT].

Opens COUNT connections one after another, each a full TLS handshake and a close, then COUNT
more resuming the first session (TLS 1.3 ticket). Reports wall-clock handshakes per second
(bounded by this client, which is Python) and the server's CPU time per handshake from
/proc/PID/stat, which is the server's capacity: 1e6 / (µs per handshake) per core."""
import json
import os
import socket
import ssl
import sys
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
ticks = os.sysconf("SC_CLK_TCK")


def server_cpu_s():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.set_alpn_protocols(["http/1.1"])


def handshakes(n, session=None, wait_for_ticket=False):
    last, reused = None, False
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                # TLS 1.3 tickets arrive after the handshake; a read makes Python take them.
                tls.settimeout(0.2 if wait_for_ticket else 0.0)
                try:
                    tls.recv(1)
                except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
                    pass
                last, reused = tls.session, tls.session_reused
    return last, reused


for label in ("full", "resumed"):
    session = handshakes(1, wait_for_ticket=True)[0] if label == "resumed" else None
    cpu0, t0 = server_cpu_s(), time.monotonic()
    _, reused = handshakes(count, session)
    cpu1, t1 = server_cpu_s(), time.monotonic()
    print("TLS_HANDSHAKES " + json.dumps({
        "kind": label,
        "count": count,
        "resumed": bool(reused),
        "per_second_wall": round(count / (t1 - t0)),
        "server_cpu_us_per_handshake": round((cpu1 - cpu0) * 1e6 / count, 1),
    }))
