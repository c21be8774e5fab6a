#!/usr/bin/env bash
# Produce throughput with authentication on vs off, for docs/PERFORMANCE.md.
# "Off": a node without auth.required, a plain client. "On": a node with
# auth.required and a bucket registry, a client that authenticates (every frame
# tagged), owns bucket 1 and produces to b1.* streams (every request
# authorized, usage accounted). Usage is accounted in both. Fresh node and data
# directory per run; runs alternate so drift on this shared machine hits both.
# Usage: scripts/auth-bench.sh [rounds] [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-8}
cargo build --release --locked --bin shard-server --bin ddc >/dev/null
DDC=target/release/ddc
WORK=$(mktemp -d -p "${DDC_PERF_DIR:-$PWD/target}" auth-bench.XXXXXX)
cleanup() {
    [[ -n "${NODE:-}" ]] && kill "$NODE" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ADDR=127.0.0.1:7590
"$DDC" keygen "$WORK/owner.key" >"$WORK/owner.account" 2>/dev/null
printf '[[bucket]]\nid = 1\nowner = "%s"\n' "$(cat "$WORK/owner.account")" >"$WORK/buckets.toml"
ARGS=(--connections 8 --record-size 1024 --batch 64 --in-flight 8 --duration "$SECONDS_EACH" --json)

run() { # name required identity-args...
    local name=$1 required=$2
    shift 2
    rm -rf "$WORK/data"
    printf 'data_dir = "%s"\nlisten = "%s"\ncores = 2\n[http]\nlisten = "127.0.0.1:0"\n[server]\nio_memory_bytes = 2097152\n[auth]\nrequired = %s\nbuckets_file = "%s"\n' \
        "$WORK/data" "$ADDR" "$required" "$WORK/buckets.toml" >"$WORK/config.toml"
    target/release/shard-server --config "$WORK/config.toml" 2>"$WORK/$name.log" &
    NODE=$!
    for _ in $(seq 100); do "$DDC" --server "$ADDR" "$@" ping >/dev/null 2>&1 && break; sleep 0.1; done
    "$DDC" --server "$ADDR" "$@" bench produce "${ARGS[@]}" --stream-prefix b1.bench >"$WORK/$name.json"
    kill "$NODE"; wait "$NODE" 2>/dev/null || true; NODE=
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_s"]))' "$WORK/$name.json"
}

echo "round  off(rec/s)  on(rec/s)  ratio"
for r in $(seq "$ROUNDS"); do
    off=$(run "off-$r" false)
    on=$(run "on-$r" true --identity "$WORK/owner.key")
    python3 -c 'import sys; off,on=int(sys.argv[2]),int(sys.argv[3]); print(f"{sys.argv[1]:>5}  {off:>10}  {on:>9}  {on/off:.3f}")' "$r" "$off" "$on"
done
