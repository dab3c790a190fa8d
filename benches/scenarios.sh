#!/usr/bin/env bash
# Runs the standard load scenarios against a freshly started stratus, server pinned to core 0 and
# the generator to core 1, each scenario RUNS times (default 3), and appends the generator's
# LOADGEN_RESULT / LOADGEN_SATURATION lines to OUT (default target/scenarios.jsonl).
#
#   bash benches/scenarios.sh            # scenarios 1 2 3 5, then 4
#   SCENARIOS="1" RUNS=1 bash benches/scenarios.sh
#   STRATUS_ARGS="--tick-hz 60" bash benches/scenarios.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
out="${OUT:-target/scenarios.jsonl}"
scenarios="${SCENARIOS:-1 2 3 5 4}"
port="${PORT:-9080}"

cargo build --release --quiet
cargo bench --bench loadgen --no-run --quiet 2>/dev/null
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -n 1)

# Scenario 5 holds 15000 connections; saturation steps exceed the default message rate. Every
# scenario connects more than --max-connections-per-ip clients from 127.0.0.1.
server_args() {
  case "$1" in
    5) echo "--max-connections 16000 --max-connections-per-ip 0" ;;
    4) echo "--message-rate 0 --byte-rate 0 --max-connections-per-ip 0" ;;
    *) echo "--max-connections-per-ip 0" ;;
  esac
}

for scenario in $scenarios; do
  for run in $(seq "$runs"); do
    # shellcheck disable=SC2046
    taskset -c 0 target/release/stratus --listen "127.0.0.1:$port" --log-level warn \
      $(server_args "$scenario") ${STRATUS_ARGS:-} &
    server=$!
    sleep 0.5
    echo "scenario $scenario run $run (server pid $server)"
    taskset -c 1 "$loadgen" --url "ws://127.0.0.1:$port/" --scenario "$scenario" \
      --server-pid "$server" | tee /dev/stderr | grep -E '^LOADGEN_(RESULT|SATURATION)' \
      | sed "s/^/scenario=$scenario run=$run ${STRATUS_ARGS:-} /" >> "$out" || true
    kill -TERM "$server"
    wait "$server" || true
  done
done
echo "results appended to $out"
