#!/usr/bin/env bash
# Runs the hostile-load scenarios of benches/attacks.py against two server binaries,
# alternating them (A B A B A B) because the machine is shared, and prints the median of each
# measure per attack and binary. Appends every run to target/attacks.jsonl (with what each
# attack observed itself, which the table leaves out).
#
#   bash benches/attacks.sh BEFORE_BINARY AFTER_BINARY [REPEATS] [WINDOW_SECONDS]
#   ATTACKS="parked identity unread-get" bash benches/attacks.sh BEFORE AFTER 1
#
# ATTACKS defaults to issue 10's five. Each run is bounded: WINDOW seconds of attack (default:
# each attack's own, 8 s for most) plus about 5 s of setup; a run is stopped after 300 s.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?before binary}
after=${2:?after binary}
repeats=${3:-3}
window=${4:-}
attacks=${ATTACKS:-churn stuck joiners pings large}
out=target/attacks.jsonl
mkdir -p target
: > "$out.this"
for attack in $attacks; do
  for _ in $(seq "$repeats"); do
    for binary in "$before" "$after"; do
      # shellcheck disable=SC2086
      timeout 300 python3 benches/attacks.py "$binary" "$attack" $window \
        | tee -a "$out" >> "$out.this" || echo "run failed: $binary $attack" >&2
    done
  done
done
# shellcheck disable=SC2086
python3 - "$out.this" "$before" "$after" $attacks <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["bystander_p50_ms", "bystander_p99_ms", "bystander_max_ms", "server_cpu_pct",
        "rss_start_kib", "rss_peak_kib", "rss_end_kib", "bystander_received"]
print("| attack | binary | runs | " + " | ".join(keys) + " |")
print("|" + "---|" * (len(keys) + 3))
for attack in sys.argv[4:]:
    for label, binary in [("before", sys.argv[2]), ("after", sys.argv[3])]:
        rs = [r for r in runs if r["attack"] == attack and r["binary"] == binary]
        if not rs:
            continue
        med = lambda k: statistics.median([r[k] for r in rs if r[k] is not None] or [0])
        print(f"| {attack} | {label} | {len(rs)} | " + " | ".join(f"{med(k):g}" for k in keys) + " |")
PY
