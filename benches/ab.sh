#!/usr/bin/env bash
# Compares two server binaries on the same scenarios, alternating A and B run by run so that
# drift on a shared machine hits both alike. Server pinned to core 0, generator to core 1.
# Appends LOADGEN_RESULT lines tagged side=A|B to OUT (default target/ab.jsonl); summarize with
#   python3 benches/summarize.py target/ab.jsonl
#
#   A=/path/to/old/stratus B=target/release/stratus SCENARIOS="1 3" RUNS=3 bash benches/ab.sh
#
# STRATUS_ARGS go to both servers, A_ARGS and B_ARGS to one (for options only one knows, such
# as B_ARGS="--max-connections-per-ip 0", since the generator connects from one address).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?set A to the baseline binary}"
: "${B:?set B to the binary under test}"
runs="${RUNS:-3}"
out="${OUT:-target/ab.jsonl}"
scenarios="${SCENARIOS:-1 3}"
port="${PORT:-9080}"
cargo bench --bench loadgen --no-run --quiet 2>/dev/null
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -n 1)

for scenario in $scenarios; do
  for run in $(seq "$runs"); do
    for side in A B; do
      binary=${!side}
      side_args="${side}_ARGS"
      # shellcheck disable=SC2086
      taskset -c 0 "$binary" --listen "127.0.0.1:$port" --log-level warn ${STRATUS_ARGS:-} \
        ${!side_args:-} &
      server=$!
      sleep 0.5
      echo "scenario $scenario run $run side $side ($binary, pid $server)"
      # shellcheck disable=SC2086
      taskset -c 1 "$loadgen" --url "ws://127.0.0.1:$port/" --scenario "$scenario" \
        --server-pid "$server" ${LOADGEN_ARGS:-} | grep -E '^LOADGEN_RESULT' \
        | sed "s/^/scenario=$scenario run=$run side=$side /" >> "$out" || true
      kill -TERM "$server"
      wait "$server" || true
    done
  done
done
echo "results appended to $out"
