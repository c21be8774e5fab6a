#!/usr/bin/env bash
# What a hostile flood costs the node (peak RSS) and its well-behaved clients
# (produce throughput), for docs/RELIABILITY.md.
#
# One node (2 cores, default limits, fresh data directory). First a baseline:
# `ddc bench produce` alone. Then, for each attack mode of the `flood` tool
# (benches/src/bin/flood.rs), the same bench while `flood` runs against the
# same node; the node's RSS is sampled every 0.2 s. After each attack the node
# must still answer a ping. Ratios are against the baseline of the same run.
#
# Usage: scripts/flood-bench.sh [connections per attack] [seconds per bench] [modes...]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-2000}
SECS=${2:-8}
shift $(( $# > 2 ? 2 : $# ))
MODES=("$@")
[[ ${#MODES[@]} -eq 0 ]] && MODES=(idle stall drip garbage reconnect slow-reader mixed)
cargo build --release --locked --bin shard-server --bin ddc >/dev/null
cargo build --release --locked -p ddc-benches --bin flood >/dev/null
DDC=target/release/ddc
WORK=$(mktemp -d -p "${DDC_PERF_DIR:-$PWD/target}" flood-bench.XXXXXX)
NODE=
cleanup() {
    [[ -n "$NODE" ]] && kill "$NODE" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
printf 'data_dir = "%s"\nlisten = "%s"\ncores = 2\n' "$WORK/data" "$ADDR" >"$WORK/config.toml"
target/release/shard-server --config "$WORK/config.toml" 2>"$WORK/node.log" &
NODE=$!
for _ in $(seq 100); do "$DDC" --server "$ADDR" ping >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' "/proc/$NODE/status"; }
BENCH=(bench produce --connections 4 --record-size 1024 --batch 64 --in-flight 8 --duration "$SECS" --json)

bench() { # output file
    "$DDC" --server "$ADDR" "${BENCH[@]}" --stream-prefix "good" >"$1"
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_s"]))' "$1"
}

echo "node pid $NODE at $ADDR; RSS at start $(rss) KiB; $CONNS hostile connections per attack; ${SECS} s benches"
base=$(bench "$WORK/base.json")
echo "baseline: $base records/s (RSS $(rss) KiB)"
printf '%-12s %12s %8s %14s %14s %12s %s\n' mode "good rec/s" ratio "peak RSS KiB" "after KiB" "refused" "flood"
for mode in "${MODES[@]}"; do
    target/release/flood --server "$ADDR" --mode "$mode" --connections "$CONNS" --duration $((SECS + 4)) \
        >"$WORK/flood-$mode.json" &
    FLOOD=$!
    peak=0
    ( while kill -0 "$FLOOD" 2>/dev/null; do r=$(rss); echo "$r"; sleep 0.2; done ) >"$WORK/rss-$mode.txt" &
    SAMPLER=$!
    sleep 2
    good=$(bench "$WORK/good-$mode.json")
    wait "$FLOOD"
    wait "$SAMPLER" || true
    peak=$(sort -n "$WORK/rss-$mode.txt" | tail -1)
    sleep 1
    if ! "$DDC" --server "$ADDR" ping >/dev/null; then
        echo "node did not answer a ping after the $mode attack" >&2
        exit 1
    fi
    refused=$(grep -c "connection limit" "$WORK/node.log" || true)
    printf '%-12s %12s %8s %14s %14s %12s %s\n' "$mode" "$good" \
        "$(python3 -c "print(f'{$good/$base:.2f}')")" "$peak" "$(rss)" "$refused" "$(cat "$WORK/flood-$mode.json")"
done
grep -c "stopped reading their answers" "$WORK/node.log" | sed 's/^/warnings about evicted slow readers: /' || true
