#!/usr/bin/env python3
"""How long `GET /logs?limit=1000` takes on a project with 1000 history entries.

Starts BINARY on a free loopback port (fresh data directory, default settings plus ARGS), gives
project "bench" 1000 entries from one Scratch client, then asks for the whole page REQUESTS times
over one kept-alive connection, in three states of the room:
  memory   - the room in memory, its entries not yet saved (a long --persist-interval)
  merged   - the room in memory, its entries saved: the page is read from SQLite and merged
  disk     - after a restart: the room only on disk
and prints the median and p99 wall time per request as this client sees it (loopback: the
server's own time plus two socket hops).

  python3 benches/logs_latency.py target/release/stratus [REQUESTS]
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from hostile.harness import free_port, wait_listening  # noqa: E402
from hostile.wire import connect, handshake, setmsg  # noqa: E402

ENTRIES = 1000


def start(binary, port, data_dir, extra):
    return subprocess.Popen(
        [binary, "--listen", "127.0.0.1:%d" % port, "--data-dir", data_dir,
         "--max-connections-per-ip", "0", "--api-rate", "0", "--log-level", "warn"] + extra,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fill(port):
    client = connect(port, handshake("bench", "filler"))
    watcher = connect(port, handshake("bench", "watcher"))
    time.sleep(0.2)
    client.sendall(b"".join(setmsg("☁ v%d" % (i % 10), str(i)) for i in range(ENTRIES)))
    return client, watcher


def read_response(sock, buffer):
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, rest = buffer.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


def measure(port, requests):
    sock = socket.create_connection(("127.0.0.1", port))
    request = b"GET /logs?projectid=bench&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
    times, buffer, entries = [], b"", 0
    for i in range(requests):
        if i and i % 90 == 0:  # under the per-connection request cap
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            buffer = b""
        start_time = time.perf_counter()
        sock.sendall(request)
        head, body, buffer = read_response(sock, buffer)
        times.append(time.perf_counter() - start_time)
        entries = body.count(b'"verb"')
        assert head.startswith(b"HTTP/1.1 200"), head
    sock.close()
    times.sort()
    return entries, times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def wait_entries(port, want):
    deadline = time.time() + 30
    while time.time() < deadline:
        if measure(port, 1)[0] >= want:
            return
        time.sleep(0.05)
    raise SystemExit("the page never had %d entries" % want)


def main():
    binary = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    data_dir = tempfile.mkdtemp(prefix="stratus-logs-")
    port = free_port()
    try:
        # memory: entries unsaved for a minute
        server = start(binary, port, data_dir, ["--persist-interval", "60s"])
        wait_listening(port)
        clients = fill(port)
        wait_entries(port, ENTRIES)
        print("memory: %d entries, median %.2f ms, p99 %.2f ms" % measure(port, requests))
        server.terminate()
        server.wait()
        for c in clients:
            c.close()
        shutil.rmtree(data_dir)
        os.mkdir(data_dir)
        # merged: saved every 100 ms, the room stays in memory with a member
        server = start(binary, port, data_dir, ["--persist-interval", "100ms"])
        wait_listening(port)
        clients = fill(port)
        wait_entries(port, ENTRIES)
        time.sleep(0.5)
        print("merged: %d entries, median %.2f ms, p99 %.2f ms" % measure(port, requests))
        server.terminate()
        server.wait()
        for c in clients:
            c.close()
        # disk: a new process, nobody joined
        server = start(binary, port, data_dir, [])
        wait_listening(port)
        print("disk:   %d entries, median %.2f ms, p99 %.2f ms" % measure(port, requests))
        server.terminate()
        server.wait()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
