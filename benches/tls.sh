#!/usr/bin/env bash
# TLS against plain, in one run: scenarios 1 and 3 alternated (plain, TLS, plain, TLS, ...),
# idle memory at 10000 connections each way, and TLS handshakes per second (full and resumed,
# from benches/tls_handshakes.py). Server on core 0, clients on core 1. A throwaway P-256
# certificate for localhost is made with openssl under target/tls-bench/.
#
#   bash benches/tls.sh                  # RUNS=3 by default; results appended to OUT
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
out="${OUT:-target/tls.jsonl}"
plain_port=9080
tls_port=9443
dir=target/tls-bench
mkdir -p "$dir"
if [ ! -f "$dir/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
fi

cargo build --release --quiet
cargo bench --bench loadgen --no-run --quiet 2>/dev/null
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -n 1)

start_server() {
  # shellcheck disable=SC2068
  taskset -c 0 target/release/stratus --listen "127.0.0.1:$plain_port" \
    --tls-listen "127.0.0.1:$tls_port" --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" \
    --log-level warn --max-connections 12000 $@ &
  server=$!
  sleep 0.5
}

run() { # label url loadgen-args...
  local label=$1 url=$2
  shift 2
  start_server
  echo "$label (server pid $server)"
  # shellcheck disable=SC2068
  taskset -c 1 "$loadgen" --url "$url" --server-pid "$server" $@ | tee /dev/stderr \
    | grep -E '^LOADGEN_RESULT' | sed "s/^/$label /" >> "$out" || true
  kill -TERM "$server"
  wait "$server" || true
}

for scenario in 1 3; do
  for r in $(seq "$runs"); do
    run "scenario=$scenario run=$r transport=plain" "ws://127.0.0.1:$plain_port/" --scenario "$scenario"
    run "scenario=$scenario run=$r transport=tls" "wss://127.0.0.1:$tls_port/" --scenario "$scenario"
  done
done
run "scenario=idle10k run=1 transport=plain" "ws://127.0.0.1:$plain_port/" --scenario 5 --clients 20
run "scenario=idle10k run=1 transport=tls" "wss://127.0.0.1:$tls_port/" --scenario 5 --clients 20

start_server
taskset -c 1 python3 benches/tls_handshakes.py "$tls_port" "$server" 3000 | tee -a "$out"
kill -TERM "$server"
wait "$server" || true
echo "results appended to $out"
