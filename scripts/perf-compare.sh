#!/usr/bin/env bash
# End-to-end figures for docs/PERFORMANCE.md, each against a baseline
# measured in the same run on the same disk:
#   1. fio: raw direct-I/O sequential write and read (1 MiB blocks, io_uring, QD8)
#   2. Redis 7 Streams, appendfsync always: redis-benchmark XADD, 1 KiB values,
#      50 clients, pipelining 16
#   3. shard-server + `ddc bench produce` (1 KiB records, durable acks) and
#      `ddc bench consume` (catch-up read of what was produced)
# Needs fio, redis-server and redis-benchmark (Debian: apt-get install fio redis-server).
# Usage: scripts/perf-compare.sh [seconds]   (default 10 per measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
for tool in fio redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fio redis-server)" >&2; exit 1; }
done
cargo build --release --locked --bin shard-server --bin ddc >/dev/null
WORK=$(mktemp -d -p "${DDC_PERF_DIR:-$PWD/target}" perf.XXXXXX)
cleanup() {
    [[ -n "${NODE:-}" ]] && kill "$NODE" 2>/dev/null || true
    [[ -n "${REDIS:-}" ]] && kill "$REDIS" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== fio: direct sequential write then read, 1 MiB blocks, io_uring QD8, ${SECONDS_EACH}s each"
fio --name=write --filename="$WORK/fio.dat" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=8 \
    --size=4G --time_based --runtime="$SECONDS_EACH" --end_fsync=1 --output-format=terse --terse-version=3 \
    | awk -F';' '{printf "fio write: %.1f MiB/s\n", $48/1024}'
fio --name=read --filename="$WORK/fio.dat" --rw=read --bs=1M --direct=1 --ioengine=io_uring --iodepth=8 \
    --size=4G --time_based --runtime="$SECONDS_EACH" --output-format=terse --terse-version=3 \
    | awk -F';' '{printf "fio read: %.1f MiB/s\n", $7/1024}'
rm -f "$WORK/fio.dat"

echo "== Redis Streams, appendfsync always, XADD 1 KiB, 50 clients, pipelining 16"
mkdir -p "$WORK/redis"
redis-server --port 7479 --dir "$WORK/redis" --appendonly yes --appendfsync always --save '' \
    --daemonize no --logfile "$WORK/redis/log" &
REDIS=$!
for _ in $(seq 50); do redis-cli -p 7479 ping >/dev/null 2>&1 && break; sleep 0.1; done
VALUE=$(head -c 1024 /dev/zero | tr '\0' x)
redis-benchmark -p 7479 -c 50 -P 16 -n $((40000 * SECONDS_EACH)) -q XADD bench '*' f "$VALUE" \
    | tr '\r' '\n' | grep 'requests per second' | sed 's/^.*: \([0-9.]* requests per second.*\)$/redis XADD: \1/' 
kill "$REDIS"; wait "$REDIS" 2>/dev/null || true; REDIS=

echo "== shard-server: ddc bench produce (1 KiB records, 64 per batch, durable acks) and consume"
target/release/shard-server --data-dir "$WORK/ddc" --listen 127.0.0.1:7478 --http-listen 127.0.0.1:0 2>"$WORK/node.log" &
NODE=$!
for _ in $(seq 50); do target/release/ddc --server 127.0.0.1:7478 ping >/dev/null 2>&1 && break; sleep 0.1; done
target/release/ddc --server 127.0.0.1:7478 bench produce --connections 8 --record-size 1024 --batch 64 \
    --in-flight 8 --duration "$SECONDS_EACH" --json
target/release/ddc --server 127.0.0.1:7478 bench consume --connections 8 --json
