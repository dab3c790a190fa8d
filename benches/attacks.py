#!/usr/bin/env python3
"""Hostile-load scenarios of issues 10 and 20, bounded in time, against a server binary.

Usage: python3 benches/attacks.py BINARY ATTACK [WINDOW_SECONDS]
       STRATUS_ARGS="--flag value" python3 benches/attacks.py ...   # extra server arguments

Each run starts BINARY on a free loopback port (pinned to core 0, default limits, a fresh
temporary data directory), fills a "large room" (128 variables x 100 000 digits = 12.8 MB of
state; skipped by attacks that do not use it), starts a bystander pair in another room (a
separate process on core 1: one client sets a timestamp every 20 ms, the other measures
send-to-receipt latency), runs one attack (on core 1) for WINDOW seconds (default 8; parked 20,
identity 14.5) and prints one JSON line: bystander p50/p99/max in ms and timestamps received
(fewer than sent: a 30 Hz tick coalesces the 50 sets/s), server CPU % of one core over the
window (from /proc/PID/stat), RSS at the start, its peak during the window, and 1 s after the
window with the attack's sockets still open ("end"), the load average before and after the run
(the machine is shared), and what the attack itself observed (fields named after the attack).

Attacks of issue 10 (all valid input under default limits):
  churn    2 processes looping connect -> upgrade + join the large room -> read a bit -> reset
  stuck    20 members of the large room that never read, each at a different version
  joiners  5 bursts of 100 joins to the large room by clients that never read
  pings    100 clients that never read, each sending 450 pings/s of 125 bytes
  large    300 connections each sending one 1 MB message, then idle

Attacks of issue 20:
  parked      MultiStudio connections opened 400 at a time, each HELLO + 4 JOIN_ROOM (a shared
              "popular" room and 3 rooms of its own), reset once answered (no close frame: the
              session is parked). Meanwhile every 0.5 s one honest client per dialect (Scratch
              handshake, array-RPC authenticate, MultiStudio HELLO + JOIN_ROOM) joins,
              alternately the popular room and a fresh one, from 127.0.0.2 (not the attacker's
              address). Reports honest joins that succeeded and refusals by what the server
              said, the first refusal and last join (seconds into the attack), the attacker's
              counts, and parked sessions, rooms and open connections from /metrics at the end.
              No large room.
  identity    server with --max-connections-per-user 1: an honest array-RPC client
              authenticates as username "alice", stays, and logs in again at once when put
              out; every 0.5 s the attacker authenticates with {"client_id": "alice"}. Reports
              how often the honest one was told connection.replaced or closed. No large room.
  unread-get  40 array-RPC members of the large room (receive buffer 64 KiB) each read their
              join reply, send cloud.set + cloud.get once and never read again (the set
              changes the room, so the get cannot reuse a rendering). Look at RSS.
  get-rate    4 array-RPC members of the large room sending cloud.set + cloud.get, 20 pairs/s
              each, reading everything. Reports full-state replies received per second, the
              attacker's MB/s, and how long /metrics takes to answer once the 4 are reset
              after the window (the server works through the requests they left unread).
  get-rate-studio  the same in MultiStudio: SET + JOIN_ROOM of the room already joined.
  join-burst  rounds of 100 Scratch joins to the large room by clients that read their whole
              snapshot and then leave; the next round 0.5 s after. Reports each round's
              duration. (`joiners` does not read, so its sockets take only a few KB each.)
  garbage     one connection sends 2 000 random bytes (no CR or LF) as its request head.
              Reports the seconds until the server answered or closed, and the answer; waits
              up to 30 s, whatever the window. No large room.

Only the Python standard library is used (the scenarios are in benches/hostile/). Everything
is on loopback (the server listens on 127.0.0.1); a run ends by itself shortly after WINDOW.
"""

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

from hostile import garbage, identity, join_burst, parked, renders, round1
from hostile.harness import (Attack, bystander, cpu_ticks, fill_large_room, free_port,
                             loadavg, rss_kib, server_command, wait_listening)

# Each starts an attack from an `Attack` and returns a function that waits for it to end and
# returns what it observed.
ATTACKS = {
    "churn": round1.churn,
    "stuck": round1.stuck,
    "joiners": round1.joiners,
    "pings": round1.pings,
    "large": round1.large,
    "parked": parked.start,
    "identity": identity.start,
    "unread-get": renders.unread_get,
    "get-rate": renders.get_rate("rpc"),
    "get-rate-studio": renders.get_rate("studio"),
    "join-burst": join_burst.start,
    "garbage": garbage.start,
}
SERVER_ARGS = {"identity": identity.SERVER_ARGS}
WITHOUT_LARGE_ROOM = {"parked", "identity", "garbage"}
# parked: every place is held after about 10 s; identity: the issue watched 14 s.
DEFAULT_WINDOW = {"parked": 20.0, "identity": 14.5}


def main():
    binary, name = sys.argv[1], sys.argv[2]
    if name not in ATTACKS:
        raise SystemExit("unknown attack %s; one of: %s" % (name, " ".join(ATTACKS)))
    window = float(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_WINDOW.get(name, 8.0)
    load_before = loadavg()
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="stratus-attacks-")
    command = server_command(binary, port, data_dir, SERVER_ARGS.get(name, []))
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    held = []
    try:
        wait_listening(port)
        os.sched_setaffinity(0, {1})
        if name not in WITHOUT_LARGE_ROOM:
            fill_large_room(port)
        time.sleep(0.5)
        rss_start = rss_kib(server.pid)
        out = mp.Queue()
        by = mp.Process(target=bystander, args=(port, window, out))
        by.start()
        time.sleep(0.5)
        hz = os.sysconf("SC_CLK_TCK")
        cpu0, t0 = cpu_ticks(server.pid), time.time()
        attack = Attack(port, window - 0.5)
        held = attack.held
        wait = ATTACKS[name](attack)
        peak = rss_start
        while by.is_alive() and time.time() < t0 + window + 30:
            peak = max(peak, rss_kib(server.pid))
            time.sleep(0.1)
            if not out.empty():
                break
        latencies = out.get(timeout=60)
        cpu1, t1 = cpu_ticks(server.pid), time.time()
        observed = wait()
        by.join()
        peak = max(peak, rss_kib(server.pid))
        # What stays once the attack is over (its connections still open, now idle).
        time.sleep(1.0)
        rss_end = rss_kib(server.pid)
        latencies.sort()
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
        print(json.dumps({
            "binary": binary,
            "attack": name,
            "window_s": window,
            "server_args": [a if a != data_dir else "TMPDIR" for a in command[4:]],
            "large_room": name not in WITHOUT_LARGE_ROOM,
            "bystander_received": len(latencies),
            "bystander_p50_ms": pick(0.5),
            "bystander_p99_ms": pick(0.99),
            "bystander_max_ms": round(latencies[-1], 2) if latencies else None,
            "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / hz / (t1 - t0), 1),
            "rss_start_kib": rss_start,
            "rss_peak_kib": peak,
            "rss_end_kib": rss_end,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            **observed,
        }, ensure_ascii=False), flush=True)
    finally:
        for s in held:
            s.close()
        server.kill()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
