#!/usr/bin/env python3
"""Medians per scenario from benches/scenarios.sh output (target/scenarios.jsonl)."""
import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "target/scenarios.jsonl"
runs = defaultdict(list)
for line in open(path):
    prefix, _, payload = line.partition("LOADGEN_")
    kind, _, body = payload.partition(" ")
    if kind != "RESULT":
        continue
    result = json.loads(body)
    key = prefix.split(" run=")[0] + " " + " ".join(prefix.split()[2:])
    if result.get("step") is not None:
        key += f" step={result['step']}"
    runs[key.strip()].append(result)

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

fields = [
    ("sent/s", lambda r: r["sets_sent_per_s"]),
    ("delivered/s", lambda r: r["sets_delivered_per_s"]),
    ("frames/s", lambda r: r.get("frames_received_per_s")),
    ("ratio", lambda r: r["delivery_ratio"]),
    ("p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("p99.9 ms", lambda r: r["latency_ms"]["p99_9"]),
    ("max ms", lambda r: r["latency_ms"]["max"]),
    ("cpu %", lambda r: r["server"]["cpu_pct_total"]),
    ("user %", lambda r: r["server"]["cpu_pct_user"]),
    ("sys %", lambda r: r["server"]["cpu_pct_system"]),
    ("us/sent", lambda r: r["server"]["cpu_us_per_sent_set"]),
    ("us/deliv", lambda r: r["server"]["cpu_us_per_delivered_set"]),
    ("rss before KiB", lambda r: r["server"]["rss_kib_before"]),
    ("rss load KiB", lambda r: r["server"]["rss_kib_under_load"]),
    ("KiB/conn", lambda r: r["server"]["rss_kib_per_connection"]),
    ("gen cpu %", lambda r: r["generator"]["cpu_pct_of_core"]),
]
print("| run | n | " + " | ".join(name for name, _ in fields) + " |")
print("|" + "---|" * (len(fields) + 2))
for key, results in runs.items():
    cells = []
    for _, get in fields:
        value = med([get(r) for r in results])
        cells.append("-" if value is None else f"{value:,.3g}" if isinstance(value, float) and value < 100 else f"{value:,.0f}")
    print(f"| {key} | {len(results)} | " + " | ".join(cells) + " |")
