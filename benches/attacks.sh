#!/usr/bin/env bash
# Runs the hostile-load scenarios of benches/attacks.py against two server binaries,
# alternating them (A B A B A B) because the machine is shared, and prints the median of each
# measure per attack and binary. Appends every run to target/attacks.jsonl.
#
#   bash benches/attacks.sh BEFORE_BINARY AFTER_BINARY [REPEATS] [WINDOW_SECONDS]
#
# Each run is bounded: WINDOW seconds of attack (default 8) plus about 5 s of setup.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?before binary}
after=${2:?after binary}
repeats=${3:-3}
window=${4:-8}
out=target/attacks.jsonl
mkdir -p target
: > "$out.this"
for attack in churn stuck joiners pings large; do
  for _ in $(seq "$repeats"); do
    for binary in "$before" "$after"; do
      timeout $((window * 4 + 60)) python3 benches/attacks.py "$binary" "$attack" "$window" \
        | tee -a "$out" >> "$out.this" || echo "run failed: $binary $attack" >&2
    done
  done
done
python3 - "$out.this" "$before" "$after" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["bystander_p50_ms", "bystander_p99_ms", "bystander_max_ms", "server_cpu_pct",
        "rss_start_kib", "rss_peak_kib", "rss_end_kib", "bystander_received"]
print("| attack | binary | runs | " + " | ".join(keys) + " |")
print("|" + "---|" * (len(keys) + 3))
for attack in ["churn", "stuck", "joiners", "pings", "large"]:
    for label, binary in [("before", sys.argv[2]), ("after", sys.argv[3])]:
        rs = [r for r in runs if r["attack"] == attack and r["binary"] == binary]
        if not rs:
            continue
        med = lambda k: statistics.median([r[k] for r in rs if r[k] is not None] or [0])
        print(f"| {attack} | {label} | {len(rs)} | " + " | ".join(f"{med(k):g}" for k in keys) + " |")
PY
