#!/usr/bin/env bash
# Cluster figures for docs/PERFORMANCE.md, each a ratio against a baseline
# measured in the same run on the same machine:
#   1. produce (1 KiB records, 64 per batch, durable acks, 4 connections):
#      a 3-node cluster with replication 3 (acks=all) vs one node alone,
#      every process on one core (cores = 1);
#   2. consume of sealed segments on a 6-node cluster (k=4, n=6): with the
#      stream's leader and one follower SIGKILLed (sealed segments rebuilt
#      from 4 shards) vs all nodes healthy, both through the same surviving node.
# All nodes share this machine's cores and disk, so replication's ratio
# includes three times the disk writes on one disk.
# Usage: scripts/cluster-bench.sh [seconds] [records for the consume test]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
CONSUME_RECORDS=${2:-200000}
cargo build --release --locked --bin shard-server --bin ddc >/dev/null
DDC=target/release/ddc
WORK=$(mktemp -d -p "${DDC_PERF_DIR:-$PWD/target}" cluster-bench.XXXXXX)
cleanup() {
    [[ -n "${NODE:-}" ]] && kill "$NODE" 2>/dev/null || true
    for c in "$WORK"/c3 "$WORK"/c6; do [[ -d "$c" ]] && "$DDC" cluster down --data-dir "$c" >/dev/null 2>&1 || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PRODUCE_ARGS=(--connections 4 --record-size 1024 --batch 64 --in-flight 8 --duration "$SECONDS_EACH" --json)

echo "== 1a. one node alone (cores = 1): ddc bench produce"
target/release/shard-server --data-dir "$WORK/single" --listen 127.0.0.1:7580 --http-listen 127.0.0.1:0 --cores 1 2>"$WORK/single.log" &
NODE=$!
for _ in $(seq 100); do "$DDC" --server 127.0.0.1:7580 ping >/dev/null 2>&1 && break; sleep 0.1; done
"$DDC" --server 127.0.0.1:7580 bench produce "${PRODUCE_ARGS[@]}" | tee "$WORK/single.json"
kill "$NODE"; wait "$NODE" 2>/dev/null || true; NODE=

echo "== 1b. three nodes, replication 3, acks=all: ddc bench produce through node-0"
"$DDC" cluster up --nodes 3 --data-dir "$WORK/c3" --base-port 7581 --cores 1 >/dev/null
"$DDC" --server 127.0.0.1:7581 bench produce "${PRODUCE_ARGS[@]}" | tee "$WORK/repl3.json"
"$DDC" cluster down --data-dir "$WORK/c3" >/dev/null

echo "== 2. six nodes (k=4, n=6): consume of sealed segments, healthy vs two nodes down"
"$DDC" cluster up --nodes 6 --data-dir "$WORK/c6" --base-port 7591 --cores 1 >/dev/null
STREAM=sealed-0
mapfile -t ROLES < <("$DDC" cluster placement "$STREAM" --data-dir "$WORK/c6" --plain)
LEADER=$(echo "${ROLES[0]}" | awk '{print $2}')
FOLLOWER=$(echo "${ROLES[1]}" | awk '{print $2}')
SURVIVOR_ADDR=$(echo "${ROLES[2]}" | awk '{print $3}')
echo "stream $STREAM: leader $LEADER, follower $FOLLOWER killed later; reading through $SURVIVOR_ADDR"
"$DDC" --server "$SURVIVOR_ADDR" bench produce --connections 1 --record-size 1024 --batch 64 --in-flight 8 \
    --count "$CONSUME_RECORDS" --stream-prefix sealed --json >/dev/null
"$DDC" --server "$SURVIVOR_ADDR" seal "$STREAM" >/dev/null
for _ in $(seq 600); do
    "$DDC" cluster status --data-dir "$WORK/c6" --json >"$WORK/status.json" 2>/dev/null && break
    sleep 0.5
done
python3 - "$WORK/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
segs = s.get("segments", [])
print(f"sealed segments coded: {len(segs)}, exit code {s.get('exit_code')}")
EOF
"$DDC" --server "$SURVIVOR_ADDR" bench consume --connections 1 --stream-prefix sealed --json | tee "$WORK/healthy.json"
"$DDC" cluster stop-node --data-dir "$WORK/c6" --node "${LEADER#node-}" --kill >/dev/null
"$DDC" cluster stop-node --data-dir "$WORK/c6" --node "${FOLLOWER#node-}" --kill >/dev/null
"$DDC" --server "$SURVIVOR_ADDR" bench consume --connections 1 --stream-prefix sealed --json | tee "$WORK/degraded.json"

python3 - "$WORK" <<'EOF'
import json, sys, os
w = sys.argv[1]
j = lambda n: json.load(open(os.path.join(w, n)))
single, repl3, healthy, degraded = j("single.json"), j("repl3.json"), j("healthy.json"), j("degraded.json")
print("== ratios (same run)")
print(f"produce, replication 3 / single node: {repl3['records_per_s']:.0f} / {single['records_per_s']:.0f} rec/s = {repl3['records_per_s']/single['records_per_s']:.2f}"
      f"  (p99 {repl3['p99_us']} us vs {single['p99_us']} us)")
print(f"consume sealed, two nodes down / healthy: {degraded['mb_per_s']:.1f} / {healthy['mb_per_s']:.1f} MB/s = {degraded['mb_per_s']/healthy['mb_per_s']:.2f}")
EOF
