#!/usr/bin/env bash
# Build and run one shard-server with its embedded defaults (data in
# ./ddc-data, listening on 127.0.0.1:7400, admin HTTP endpoint on
# 127.0.0.1:7480, one core per CPU), show a
# produce/consume round trip with the ddc CLI, then keep serving until
# Ctrl-C (which shuts the node down cleanly).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --bin shard-server --bin ddc
BIN=target/release
$BIN/shard-server &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER' EXIT INT TERM
for _ in $(seq 50); do $BIN/ddc ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "--- produce three records to stream 'demo'"
printf 'hello\nfrom\nddc\n' | $BIN/ddc produce demo
echo "--- consume them back (offset<TAB>record)"
$BIN/ddc consume demo --offsets
echo "--- stream info"
$BIN/ddc info demo
echo
echo "shard-server is running on 127.0.0.1:7400 (data in ./ddc-data)."
echo "Status page: http://127.0.0.1:7480/   metrics: http://127.0.0.1:7480/metrics. Try:"
echo "  $BIN/ddc produce demo < some-file.txt"
echo "  $BIN/ddc consume demo --follow"
echo "  $BIN/ddc bench produce --duration 10"
echo "Ctrl-C stops it."
wait $SERVER
