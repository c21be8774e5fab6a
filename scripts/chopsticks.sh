#!/usr/bin/env bash
# Runs the real Cere runtime (chain spec cere-dev-54113) locally with chopsticks, in
# the foreground, serving JSON-RPC over HTTP and WebSocket on 127.0.0.1:<port>.
#
#   scripts/chopsticks.sh [port] [db-dir]
#
#   port     default 8000. chopsticks itself would silently move to port+1..port+9
#            when the port is taken; this script refuses instead.
#   db-dir   optional. Without it the chain lives in memory and nothing is written
#            to disk. With it, blocks are kept in <db-dir>/chopsticks.sqlite, which
#            needs the sqlite3 native module: it is compiled once (about 2 minutes,
#            needs make, g++ and python3).
#
# DDC_CHAIN_SPEC overrides the chain spec path. The pinned chopsticks lives in
# anchor/chain-test/ and is installed from its package-lock.json on first use
# (`npm ci --ignore-scripts`, about 30 s). Stop with Ctrl-C or SIGTERM.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${1:-8000}"
db_dir="${2:-}"
spec="${DDC_CHAIN_SPEC:-$repo/../shared/chain/cere-dev-54113.raw.json}"
pkg="$repo/anchor/chain-test"
marker="$pkg/node_modules/.ddc-installed"
lock="$pkg/.install-lock"

if [[ ! -f "$spec" ]]; then
    echo "chopsticks.sh: chain spec not found: $spec (set DDC_CHAIN_SPEC)" >&2
    exit 2
fi
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "chopsticks.sh: bad port '$port'" >&2
    exit 2
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "chopsticks.sh: port $port is already in use on 127.0.0.1" >&2
    exit 1
fi

# The same lock directory and marker as anchor/tests/support/chopsticks.rs, so a
# test run and this script never run npm in the same folder at once. A lock older
# than 15 minutes was left by a killed install.
take_lock() {
    until mkdir "$lock" 2>/dev/null; do
        if [[ -n "$(find "$lock" -maxdepth 0 -mmin +15 2>/dev/null)" ]]; then
            rmdir "$lock" 2>/dev/null || true
        fi
        sleep 1
    done
    trap 'rmdir "$lock" 2>/dev/null || true' EXIT
}
release_lock() {
    rmdir "$lock" 2>/dev/null || true
    trap - EXIT
}

take_lock
if [[ ! -f "$marker" || "$pkg/package-lock.json" -nt "$marker" ]]; then
    # --ignore-scripts: the only install script is sqlite3's native build, which
    # chopsticks needs only for --db; skipping it turns ~130 s into ~30 s.
    echo "chopsticks.sh: installing chopsticks (npm ci in $pkg)" >&2
    npm ci --prefix "$pkg" --ignore-scripts --no-audit --no-fund --loglevel=error
    touch "$marker"
fi
db_args=()
if [[ -n "$db_dir" ]]; then
    mkdir -p "$db_dir"
    if [[ ! -f "$pkg/node_modules/sqlite3/build/Release/node_sqlite3.node" ]]; then
        echo "chopsticks.sh: building the sqlite3 native module for --db" >&2
        npm rebuild sqlite3 --prefix "$pkg" --no-audit --no-fund --loglevel=error
    fi
    db_args=(--db "$(cd "$db_dir" && pwd)/chopsticks.sqlite")
fi
release_lock

# chopsticks writes nothing to its working directory without --db, but run it from
# a place outside the repository all the same.
cd "${TMPDIR:-/tmp}"
# Block #1 fails about one start in ten (a BABE slot boundary between two clock reads,
# "Timestamp slot must match CurrentSlot"); then the head stays at #0 until a block is
# forced. Once the RPC answers, force blocks until #1 exists.
(
    rpc() { curl -s -m 5 -H 'Content-Type: application/json' -d "{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"$1\",\"params\":[]}" "http://127.0.0.1:$port"; }
    for _ in $(seq 120); do
        sleep 1
        head=$(rpc chain_getHeader 2>/dev/null) || continue
        number=$(grep -o '"number":"0x[0-9a-fA-F]*"' <<<"$head" | sed 's/.*"0x//; s/"//') || continue
        [[ -n "$number" ]] || continue
        (( 16#$number >= 1 )) && exit 0
        rpc dev_newBlock >/dev/null 2>&1 || true
    done
) &
exec "$pkg/node_modules/.bin/chopsticks" \
    --genesis "$spec" \
    --build-block-mode Instant \
    --host 127.0.0.1 \
    --port "$port" \
    "${db_args[@]}"
