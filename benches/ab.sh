#!/usr/bin/env bash
# Compares two server binaries on the same scenarios, alternating A and B run by run so that
# drift on a shared machine hits both alike. Server pinned to core 0, generator to core 1.
# Appends LOADGEN_RESULT lines tagged side=A|B to OUT (default target/ab.jsonl); summarize with
#   python3 benches/summarize.py target/ab.jsonl
#
#   A=/path/to/old/stratus B=target/release/stratus SCENARIOS="1 3" RUNS=3 bash benches/ab.sh
#   A=target/release/stratus A_ARGS=--no-persist B=target/release/stratus bash benches/ab.sh
# A_ARGS and B_ARGS are extra server arguments per side. Each run gets a fresh data directory.
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

# Scenario 4's saturation steps exceed the default per-client rate limits.
server_args() {
  case "$1" in
    4) echo "--message-rate 0 --byte-rate 0" ;;
    *) echo "" ;;
  esac
}

for scenario in $scenarios; do
  for run in $(seq "$runs"); do
    for side in A B; do
      binary=${!side}
      side_args_name="${side}_ARGS"
      side_args="${!side_args_name:-}"
      data=$(mktemp -d)
      data_args=""
      # Binaries from before durable storage have no --data-dir.
      if "$binary" --help | grep -q -- --data-dir; then data_args="--data-dir $data"; fi
      # shellcheck disable=SC2086
      taskset -c 0 "$binary" --listen "127.0.0.1:$port" --log-level warn $data_args \
        $(server_args "$scenario") ${STRATUS_ARGS:-} $side_args &
      server=$!
      sleep 0.5
      echo "scenario $scenario run $run side $side ($binary, pid $server)"
      # shellcheck disable=SC2086
      taskset -c 1 "$loadgen" --url "ws://127.0.0.1:$port/" --scenario "$scenario" \
        --server-pid "$server" ${LOADGEN_ARGS:-} | grep -E '^LOADGEN_(RESULT|SATURATION)' \
        | sed "s/^/scenario=$scenario run=$run side=$side /" >> "$out" || true
      kill -TERM "$server"
      wait "$server" || true
      rm -rf "$data"
    done
  done
done
echo "results appended to $out"
