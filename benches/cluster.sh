#!/usr/bin/env bash
# What sharing rooms through Redis costs: scenarios 1 and 3 against
#   solo      one node alone (no --cluster; variables in SQLite, as by default),
#   cluster1  one node with --cluster (every batch goes through Redis and comes back),
#   cluster2  two nodes with --cluster, each room's clients split over both (loadgen --servers),
# alternated per run (solo cluster1 cluster2, RUNS times) so that the noise of a shared machine
# falls on all alike. Servers and redis-server are pinned to core 0, the generator to core 1
# (as benches/scenarios.sh). One redis-server for the whole script, on a free loopback port
# with its own directory and no persistence (what is measured is stratus's traffic to Redis,
# not Redis's disk); FLUSHALL between runs.
#
# Per run it records the generator's LOADGEN_RESULT (server CPU summed over the nodes and
# Redis, and each process's own CPU in "server.each") and Redis's commands and script calls
# per second (INFO stats total_commands_processed, INFO commandstats EVALSHA, read twice
# inside the measured window), appended to OUT (default target/cluster.jsonl). At the end it
# prints medians per scenario and setup: node CPU (sum over nodes) per delivered set, p99
# latency, Redis commands/s and EVALSHA/s, redis-server CPU.
#
#   bash benches/cluster.sh
#   RUNS=1 SCENARIOS="1" bash benches/cluster.sh
#   STRATUS_ARGS="--tick-hz 60" bash benches/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
out="${OUT:-target/cluster.jsonl}"
scenarios="${SCENARIOS:-1 3}"
setups="${SETUPS:-solo cluster1 cluster2}"
# The generator's phases with the standard scenarios: 2 s ramp, 3 s warm-up, 10 s measured.
ramp_warmup=5
window=10

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cargo build --release --quiet
cargo bench --bench loadgen --no-run --quiet 2>/dev/null
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -n 1)
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(free_port)
mkdir -p "$work/redis"
taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --save "" --appendonly no --daemonize no --protected-mode no >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
redis() { redis-cli -p "$redis_port" "$@"; }
for _ in $(seq 50); do [ "$(redis PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
[ "$(redis PING)" = PONG ] || { echo "redis-server did not start" >&2; exit 1; }
redis_url="redis://127.0.0.1:$redis_port/0"
# Every command Redis ran (those inside scripts included), and the script calls (EVALSHA)
# among the commands the nodes sent.
commands() { redis INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }
scripts() {
  redis INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' \
    | grep . || echo 0
}

# Starts one stratus node on core 0 and adds its pid to node_pids (not in a subshell, so
# that this shell can wait for it).
start_node() {
  local port=$1; shift
  # shellcheck disable=SC2086
  taskset -c 0 target/release/stratus --listen "127.0.0.1:$port" --log-level warn \
    --max-connections-per-ip 0 ${STRATUS_ARGS:-} "$@" >>"$work/stratus.log" 2>&1 &
  node_pids+=("$!")
  urls+=("ws://127.0.0.1:$port/")
}

for scenario in $scenarios; do
  for run in $(seq "$runs"); do
    for setup in $setups; do
      redis FLUSHALL >/dev/null
      node_pids=()
      urls=()
      case "$setup" in
        solo)
          port=$(free_port)
          mkdir -p "$work/data-$run"
          start_node "$port" --data-dir "$work/data-$run"
          ;;
        cluster1 | cluster2)
          nodes=1; [ "$setup" = cluster2 ] && nodes=2
          for n in $(seq "$nodes"); do
            port=$(free_port)
            start_node "$port" --cluster "$redis_url" --cluster-node "n$n"
          done
          ;;
      esac
      pids+=("${node_pids[@]}")
      sleep 0.5
      for pid in "${node_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a node of $setup did not start:" >&2; tail "$work/stratus.log" >&2; exit 1; }
      done
      measured=("${node_pids[@]}")
      [ "$setup" != solo ] && measured+=("$redis_pid")
      echo "scenario $scenario run $run $setup (nodes ${node_pids[*]}, redis $redis_pid)"
      result="$work/result"
      servers=$(IFS=,; echo "${urls[*]}")
      pid_list=$(IFS=,; echo "${measured[*]}")
      taskset -c 1 "$loadgen" --servers "$servers" --scenario "$scenario" \
        --server-pid "$pid_list" >"$result" &
      generator=$!
      # Redis's commands over most of the measured window (it starts after the ramp, once
      # every connection is open, and the warm-up).
      sleep $((ramp_warmup + 1))
      c0=$(commands); s0=$(scripts); t0=$(date +%s.%N)
      sleep $((window - 2))
      c1=$(commands); s1=$(scripts); t1=$(date +%s.%N)
      wait "$generator" || true
      rate=$(python3 -c "print(round(($c1 - $c0) / ($t1 - $t0), 1))")
      script_rate=$(python3 -c "print(round(($s1 - $s0) / ($t1 - $t0), 1))")
      cat "$result" >&2
      grep -E '^LOADGEN_RESULT' "$result" \
        | sed "s/^/scenario=$scenario run=$run setup=$setup nodes=${#node_pids[@]} redis_cmds_per_s=$rate redis_scripts_per_s=$script_rate /" \
        >>"$out" || true
      for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
      rm -rf "$work/data-$run"
    done
  done
done

python3 - "$out" <<'EOF'
import json, re, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    prefix, _, body = line.partition("LOADGEN_RESULT ")
    tags = dict(re.findall(r"(\w+)=(\S+)", prefix))
    if "setup" not in tags:
        continue
    runs[(tags["scenario"], tags["setup"])].append((tags, json.loads(body)))

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def node_numbers(tags, r):
    """CPU of the nodes only (the first `nodes` pids), per delivered set and in % of a core."""
    nodes = int(tags["nodes"])
    server = r["server"] or {}
    each = server.get("each") or []
    window = r["window_s"]
    if each:
        node_s = sum((e["cpu_user_s"] or 0) + (e["cpu_system_s"] or 0) for e in each[:nodes])
        redis_pct = each[nodes]["cpu_pct_total"] if len(each) > nodes else None
    else:
        node_s = (server.get("cpu_user_s") or 0) + (server.get("cpu_system_s") or 0)
        redis_pct = None
    delivered = r["sets_delivered"]
    us = node_s * 1e6 / delivered if delivered else None
    return us, node_s / window * 100 if window else None, redis_pct

print("| scenario | setup | runs | delivered/s | p50 ms | p99 ms | node CPU % | node us/delivered set | Redis cmds/s | of which EVALSHA/s | redis-server CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (scenario, setup), results in sorted(runs.items()):
    numbers = [node_numbers(t, r) for t, r in results]
    cells = [
        med([r["sets_delivered_per_s"] for _, r in results]),
        med([r["latency_ms"]["p50"] for _, r in results]),
        med([r["latency_ms"]["p99"] for _, r in results]),
        med([n[1] for n in numbers]),
        med([n[0] for n in numbers]),
        med([float(t["redis_cmds_per_s"]) for t, _ in results]) if setup != "solo" else None,
        med([float(t.get("redis_scripts_per_s", "nan")) for t, _ in results]) if setup != "solo" else None,
        med([n[2] for n in numbers]),
    ]
    text = ["-" if v is None else f"{v:,.3g}" if v < 100 else f"{v:,.0f}" for v in cells]
    print(f"| {scenario} | {setup} | {len(results)} | " + " | ".join(text) + " |")
EOF
echo "results appended to $out"
