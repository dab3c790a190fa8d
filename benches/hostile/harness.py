"""The run around an attack: the server process, the large room, the bystander pair, and the
`Attack` an attack starts from."""

import json
import multiprocessing as mp
import os
import shlex
import socket
import subprocess
import threading
import time

from .wire import Reader, connect, handshake, setmsg

VALUE = '"' + "7" * 100_000 + '"'
LARGE_VARS = 128


class Attack:
    """What an attack starts from: the server's port, its time (start to stop_at), sockets to
    keep open until the result is printed (`held`), and for attacks in other processes a queue
    for what they observed and an event set once the bystander's window is over, so that they
    tear down after the measurement."""

    def __init__(self, port, window):
        self.port = port
        self.window = window
        self.start = time.time()
        self.stop_at = self.start + window
        self.held = []
        self.results = mp.Queue()
        self.release = mp.Event()
        self.processes = []

    def spawn(self, target, *args):
        """Runs `target(*args)` in its own process (on the caller's core)."""
        p = mp.Process(target=target, args=args)
        p.start()
        self.processes.append(p)

    def until_stop(self):
        time.sleep(max(0, self.stop_at - time.time()))

    def collect(self):
        """Lets the processes tear down, waits for them and merges the dicts they put into
        `results`."""
        self.release.set()
        observed = {}
        for _ in self.processes:
            try:
                observed.update(self.results.get(timeout=120))
            except Exception:  # a process that died puts nothing
                pass
        for p in self.processes:
            p.join(timeout=10)
        return observed


def server_command(binary, port, data_dir, extra_args):
    """The server pinned to core 0; a data directory only for binaries that have one."""
    args = ["--listen", "127.0.0.1:%d" % port, "--log-level", "error"]
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    if "--data-dir" in help_text:
        args += ["--data-dir", data_dir]
    args += extra_args + shlex.split(os.environ.get("STRATUS_ARGS", ""))
    return ["taskset", "-c", "0", binary] + args


def free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def wait_listening(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)


def fill_large_room(port):
    """Room "big": LARGE_VARS variables of 100 000 digits."""
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
    """A pair in room "bystanders": one sets a timestamp every 20 ms, the other puts the
    send-to-receipt latencies (ms) into `out`."""
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


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])
