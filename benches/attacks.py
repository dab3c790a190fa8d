#!/usr/bin/env python3
"""Hostile-load scenarios of issue 10, bounded in time, against a running server.

Each run starts the given server binary on a free loopback port (pinned to core 0), fills a
"large room" (128 variables x 100 000 digits = 12.8 MB of state), starts a bystander pair in
another room (a separate process on core 1: one client sets a timestamp every 20 ms, the other
measures send-to-receipt latency), runs one attack for WINDOW seconds and prints one JSON line:
bystander p50/p99/max in ms and timestamps received (fewer than sent: a 30 Hz tick coalesces
the 50 sets/s), server CPU % of one core over the window (from /proc/PID/stat), RSS at the
start, its peak during the window, and 1 s after the window with the attack's sockets still
open ("end").

Attacks (all valid input under default limits, as in the issue):
  churn   2 processes looping connect -> upgrade + join the large room -> read a bit -> reset
  stuck   20 members of the large room that never read, each at a different version
  joiners 5 bursts of 100 joins to the large room by clients that never read
  pings   100 clients that never read, each sending 450 pings/s of 125 bytes
  large   300 connections each sending one 1 MB message, then idle

Usage: python3 benches/attacks.py BINARY ATTACK [WINDOW_SECONDS]
Only the Python standard library is used. Everything binds 127.0.0.1 and ends after WINDOW.
"""

import json
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import threading
import time

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
VALUE = '"' + "7" * 100_000 + '"'
LARGE_VARS = 128


def frame(payload, opcode=1):
    """A masked client frame (mask 0: masking with zeros keeps the bytes)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


def handshake(room, user):
    return frame(json.dumps({"method": "handshake", "project_id": room, "user": user}).encode())


def setmsg(name, value_json):
    return frame(('{"method":"set","name":"%s","value":%s}' % (name, value_json)).encode())


def connect(port, extra=b"", rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(("127.0.0.1", port))
    s.sendall(UPGRADE + extra)
    return s


class Reader:
    """Reads server frames from a blocking socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def skip_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._need(len(self.buf) + 1)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]

    def next_text(self):
        while True:
            self._need(2)
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            at = 2
            if n == 126:
                self._need(4)
                n, at = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
            self._need(at + n)
            payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
            if op == 1:
                return payload.decode()
            if op == 8:
                raise EOFError


def fill_large_room(port):
    # Four fillers of 32 variables each: 3.2 MB stays within one client's byte burst (4 MiB).
    fillers = [connect(port, handshake("big", "filler%d" % f)) for f in range(4)]
    watcher = connect(port, handshake("big", "watcher"))
    time.sleep(0.2)
    for f, filler in enumerate(fillers):
        filler.sendall(b"".join(setmsg("☁ v%d" % i, VALUE) for i in range(f, LARGE_VARS, 4)))
    reader = Reader(watcher)
    reader.skip_head()
    seen = set()
    while len(seen) < LARGE_VARS:
        for line in reader.next_text().split("\n"):
            seen.add(json.loads(line)["name"])
    for filler in fillers:
        filler.close()
    watcher.close()


def bystander(port, window, out):
    os.sched_setaffinity(0, {1})
    writer = connect(port, handshake("bystanders", "writer"))
    reader_sock = connect(port, handshake("bystanders", "reader"))
    reader_sock.settimeout(window + 20)
    time.sleep(0.3)
    latencies, stop = [], time.time() + window

    def write():
        while time.time() < stop:
            writer.sendall(setmsg("☁ t", '"%d"' % time.time_ns()))
            time.sleep(0.02)
        writer.sendall(setmsg("☁ end", "1"))

    t = threading.Thread(target=write)
    t.start()
    reader = Reader(reader_sock)
    try:
        reader.skip_head()
        while True:
            text = reader.next_text()
            now = time.time_ns()
            for line in text.split("\n"):
                msg = json.loads(line)
                if msg["name"] == "☁ t":
                    latencies.append((now - int(msg["value"])) / 1e6)
                elif msg["name"] == "☁ end":
                    raise EOFError
    except (EOFError, socket.timeout, OSError):
        pass
    t.join()
    out.put(latencies)


def churn(port, stop_at):
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


def attack(name, port, window, held):
    """Starts the attack; returns a function that waits for it to end."""
    stop_at = time.time() + window
    if name == "churn":
        procs = [mp.Process(target=churn, args=(port, stop_at)) for _ in range(2)]
        for p in procs:
            p.start()
        return lambda: [p.join() for p in procs]
    if name == "stuck":
        changer = connect(port, handshake("big", "changer"))
        for i in range(20):
            held.append(connect(port, handshake("big", "stuck%d" % i), rcvbuf=4096))
            time.sleep(0.05)
            changer.sendall(setmsg("☁ v%d" % i, '"%d"' % i))
        # A quarter of the room changes once more (within one client's byte burst): each
        # stuck member is behind by 3.2 MB.
        changer.sendall(b"".join(setmsg("☁ v%d" % i, VALUE) for i in range(LARGE_VARS // 4)))
        held.append(changer)
        return lambda: time.sleep(max(0, stop_at - time.time()))
    if name == "joiners":
        def bursts():
            for b in range(5):
                for i in range(100):
                    held.append(connect(port, handshake("big", "j%d_%d" % (b, i)), rcvbuf=4096))
                time.sleep(window / 6)
        t = threading.Thread(target=bursts)
        t.start()
        return lambda: (t.join(), time.sleep(max(0, stop_at - time.time())))
    if name == "pings":
        clients = [connect(port, handshake("big", "p%d" % i), rcvbuf=4096) for i in range(100)]
        held.extend(clients)
        ping = frame(b"p" * 125, opcode=9)

        def flood():
            # 450 pings/s each: 9 pings every 20 ms.
            batch = ping * 9
            while time.time() < stop_at:
                t0 = time.time()
                for c in clients:
                    try:
                        c.sendall(batch)
                    except OSError:
                        pass
                time.sleep(max(0, 0.02 - (time.time() - t0)))
        t = threading.Thread(target=flood)
        t.start()
        return t.join
    if name == "large":
        message = b"\n".join(
            ('{"method":"set","name":"☁ x","value":%s}' % VALUE).encode() for _ in range(10)
        )
        for i in range(300):
            s = connect(port, handshake("large%d" % (i % 10), "l%d" % i) + frame(message))
            held.append(s)
        return lambda: time.sleep(max(0, stop_at - time.time()))
    raise SystemExit("unknown attack " + name)


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    binary, name = sys.argv[1], sys.argv[2]
    window = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        ["taskset", "-c", "0", binary, "--listen", "127.0.0.1:%d" % port, "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        os.sched_setaffinity(0, {1})
        fill_large_room(port)
        time.sleep(0.5)
        rss_start = rss_kib(server.pid)
        out = mp.Queue()
        by = mp.Process(target=bystander, args=(port, window, out))
        by.start()
        time.sleep(0.5)
        held = []
        hz = os.sysconf("SC_CLK_TCK")
        cpu0, t0 = cpu_ticks(server.pid), time.time()
        wait = attack(name, port, window - 0.5, held)
        peak = rss_start
        while by.is_alive() and time.time() < t0 + window + 30:
            peak = max(peak, rss_kib(server.pid))
            time.sleep(0.1)
            if not out.empty():
                break
        latencies = out.get(timeout=60)
        cpu1, t1 = cpu_ticks(server.pid), time.time()
        wait()
        by.join()
        # What stays once the attack is over (its connections still open, now idle).
        time.sleep(1.0)
        rss_end = rss_kib(server.pid)
        latencies.sort()
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
        print(json.dumps({
            "binary": binary,
            "attack": name,
            "window_s": window,
            "bystander_received": len(latencies),
            "bystander_p50_ms": pick(0.5),
            "bystander_p99_ms": pick(0.99),
            "bystander_max_ms": round(latencies[-1], 2) if latencies else None,
            "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / hz / (t1 - t0), 1),
            "rss_start_kib": rss_start,
            "rss_peak_kib": peak,
            "rss_end_kib": rss_end,
        }), flush=True)
        for s in held:
            s.close()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
