#!/usr/bin/env bash
# A/B of two shard-server binaries: produce then consume throughput with `ddc bench`
# (4 connections, 1 KiB records, 64 per batch, 8 in flight, 6 s each), a fresh node and
# data directory per run, alternating A and B so the machine's drift hits both.
# Build A from another commit with its own target dir, e.g.:
#   git worktree add /tmp/a <rev> && (cd /tmp/a && CARGO_TARGET_DIR=/tmp/target-a cargo build --release --bin shard-server)
# Usage: scripts/ab-bench.sh A_BIN [B_BIN (default: this tree's release build)] [rounds]
set -u
cd "$(dirname "$0")/.."
A=$1
B=${2:-$PWD/target/release/shard-server}
ROUNDS=${3:-3}
cargo build --release --locked --bin ddc --bin shard-server >/dev/null
DDC=$PWD/target/release/ddc
run() { # bin mode
  local bin=$1 mode=$2 d=$(mktemp -d)
  printf 'data_dir = "%s/data"\nlisten = "127.0.0.1:7661"\ncores = 2\n' "$d" > $d/c.toml
  # Binaries with the admin endpoint get a free port for it (older ones have no [http]).
  "$bin" --help | grep -q -- --http-listen && printf '[http]\nlisten = "127.0.0.1:0"\n' >> $d/c.toml
  "$bin" --config $d/c.toml 2>$d/log & local pid=$!
  for _ in $(seq 100); do $DDC --server 127.0.0.1:7661 ping >/dev/null 2>&1 && break; sleep 0.1; done
  $DDC --server 127.0.0.1:7661 bench produce --connections 4 --record-size 1024 --batch 64 --in-flight 8 --duration 6 --json > $d/p.json 2>/dev/null
  local p=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_s"]))' $d/p.json)
  $DDC --server 127.0.0.1:7661 bench consume --connections 4 --duration 6 --json > $d/c.json 2>/dev/null
  local c=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_s"]))' $d/c.json)
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
  echo "$p $c"
}
echo "round A_produce B_produce B/A A_consume B_consume B/A (records/s)"
for r in $(seq "$ROUNDS"); do
  read op oc < <(run "$A" x)
  read np nc < <(run "$B" x)
  python3 -c "import sys; op,np,oc,nc=map(int,sys.argv[2:]); print(sys.argv[1], op, np, f'{np/op:.2f}', oc, nc, f'{nc/oc:.2f}')" $r $op $np $oc $nc
done
