#!/usr/bin/env bash
# Compares two stratus binaries under the same loads, alternating them (A B A B ...) so that
# noise from a shared machine falls on both alike. Server pinned to core 0, generator to core 1
# (as benches/scenarios.sh). Each argument is one load, as loadgen flags; without arguments the
# standard scenarios in SCENARIOS (default "1 3") are run. Results are appended to OUT (default
# target/ab.jsonl); `python3 benches/summarize.py OUT` prints medians.
#
#   A=/path/to/old/stratus B=target/release/stratus RUNS=3 bash benches/ab.sh \
#     "--scenario 1" "--rooms 500 --clients 2 --rate 5"
#   A=/path/to/old/stratus SCENARIOS="1 3" bash benches/ab.sh
#   A=target/release/stratus A_ARGS=--no-persist SCENARIOS="1 4" bash benches/ab.sh
#
# A_ARGS and B_ARGS are extra server arguments per side, STRATUS_ARGS for both. Each run gets a
# fresh data directory (binaries from before durable storage get none).
#
# The generator connects from one address: binaries with a per-address limit get
# --max-connections-per-ip 0.
set -euo pipefail
cd "$(dirname "$0")/.."
a="${A:?A=path of the first stratus binary}"
b="${B:-target/release/stratus}"
runs="${RUNS:-3}"
out="${OUT:-target/ab.jsonl}"
# Not 9080: other servers on a shared machine may hold it.
port="${PORT:-19480}"

cargo bench --bench loadgen --no-run --quiet 2>/dev/null
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -n 1)

loads=("$@")
if [ ${#loads[@]} -eq 0 ]; then
  for scenario in ${SCENARIOS:-1 3}; do loads+=("--scenario $scenario"); done
fi

# Scenario 4's saturation steps exceed the default per-client rate limits.
load_args() {
  case "$1" in
    *"--scenario 4"*) echo "--message-rate 0 --byte-rate 0" ;;
    *) echo "" ;;
  esac
}

for load in "${loads[@]}"; do
  label=$(echo "$load" | tr -d ' -' )
  for run in $(seq "$runs"); do
    for side in A B; do
      if [ "$side" = A ]; then binary="$a"; side_args="${A_ARGS:-}"; else binary="$b"; side_args="${B_ARGS:-}"; fi
      data=$(mktemp -d)
      data_args=""
      help=$("$binary" --help)
      if grep -q -- --data-dir <<<"$help"; then data_args="--data-dir $data"; fi
      if grep -q -- --max-connections-per-ip <<<"$help"; then
        data_args="$data_args --max-connections-per-ip 0"
      fi
      # shellcheck disable=SC2086
      taskset -c 0 "$binary" --listen "127.0.0.1:$port" --log-level warn $data_args \
        $(load_args "$load") ${STRATUS_ARGS:-} $side_args &
      server=$!
      sleep 0.5
      if ! kill -0 "$server" 2>/dev/null; then
        echo "server $side did not start (is port $port free?)" >&2
        exit 1
      fi
      echo "load '$load' run $run server $side (pid $server)"
      # shellcheck disable=SC2086
      taskset -c 1 "$loadgen" --url "ws://127.0.0.1:$port/" $load --server-pid "$server" \
        | grep -E '^LOADGEN_(RESULT|SATURATION)' \
        | sed "s/^/scenario=$label run=$run server=$side /" >> "$out" || true
      kill -TERM "$server" 2>/dev/null || true
      wait "$server" || true
      rm -rf "$data"
    done
  done
done
echo "results appended to $out"
