#!/usr/bin/env bash
# Compares two stratus binaries under the same loads, alternating them (A B A B ...) so that
# noise from a shared machine falls on both alike. Server pinned to core 0, generator to core 1
# (as benches/scenarios.sh). Each argument is one load, as loadgen flags; results are appended
# to OUT (default target/ab.jsonl) and `python3 benches/summarize.py OUT` prints medians.
#
#   A=/path/to/old/stratus B=target/release/stratus RUNS=3 bash benches/ab.sh \
#     "--scenario 1" "--rooms 500 --clients 2 --rate 5"
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

for load in "$@"; do
  label=$(echo "$load" | tr -d ' -' )
  for run in $(seq "$runs"); do
    for side in A B; do
      if [ "$side" = A ]; then binary="$a"; else binary="$b"; fi
      # shellcheck disable=SC2086
      taskset -c 0 "$binary" --listen "127.0.0.1:$port" --log-level warn ${STRATUS_ARGS:-} &
      server=$!
      sleep 0.5
      if ! kill -0 "$server" 2>/dev/null; then
        echo "server $side did not start (is port $port free?)" >&2
        exit 1
      fi
      echo "load '$load' run $run server $side (pid $server)"
      # shellcheck disable=SC2086
      taskset -c 1 "$loadgen" --url "ws://127.0.0.1:$port/" $load --server-pid "$server" \
        | grep -E '^LOADGEN_RESULT' \
        | sed "s/^/scenario=$label run=$run server=$side /" >> "$out" || true
      kill -TERM "$server" 2>/dev/null || true
      wait "$server" || true
    done
  done
done
echo "results appended to $out"
