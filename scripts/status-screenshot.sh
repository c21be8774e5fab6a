#!/usr/bin/env bash
# Takes docs/status-page.png: node-0's status page in a local 3-node cluster
# that has seen some traffic, with a sealed (erasure-coded) segment, anchored
# eras, and one member stopped.
#
#   scripts/status-screenshot.sh [out.png]
#
# Builds the release binaries, starts `ddc cluster up --nodes 3` in a temporary
# directory, produces to two streams (one led by node-0, so its coded segments
# show there), seals that one twice (in two eras), stops node-2 and screenshots node-0's page with
# headless chromium (1280 px wide). When the chain spec (DDC_CHAIN_SPEC, default
# ../shared/chain/cere-dev-54113.raw.json) and npm are there, node-0 also
# anchors its eras on the real Cere runtime under chopsticks
# (scripts/chopsticks.sh), so the page lists anchors with their block links;
# otherwise it says so and the page has no anchoring section. Everything it
# started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/status-page.png}
HEIGHT=${DDC_SCREENSHOT_HEIGHT:-1400}
CHROMIUM=${CHROMIUM:-chromium}
SPEC=${DDC_CHAIN_SPEC:-../shared/chain/cere-dev-54113.raw.json}
command -v "$CHROMIUM" >/dev/null || { echo "status-screenshot.sh: $CHROMIUM not found (apt-get install chromium)" >&2; exit 2; }

cargo build --release --locked --bin shard-server --bin ddc >/dev/null
DDC=$PWD/target/release/ddc
export DDC_SHARD_SERVER=$PWD/target/release/shard-server
WORK=$(mktemp -d -t ddc-status-screenshot.XXXXXX)
CLUSTER=$WORK/cluster
CHAIN_PID=
cleanup() {
    [[ -f "$CLUSTER/cluster-state.json" ]] && "$DDC" cluster down --data-dir "$CLUSTER" >/dev/null 2>&1 || true
    if [[ -n "$CHAIN_PID" ]]; then kill "$CHAIN_PID" 2>/dev/null || true; wait "$CHAIN_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Free loopback ports: 3 client ports with their admin ports (80 higher), and one for the chain.
read -r BASE CHAIN_PORT < <(python3 - <<'EOF'
import random, socket
def free(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p)); return True
        except OSError:
            return False
while True:
    base = random.randrange(20000, 30000)
    if all(free(p) for p in [*range(base, base + 3), *range(base + 80, base + 83)]) and free(base + 100):
        print(base, base + 100); break
EOF
)
HTTP0=127.0.0.1:$((BASE + 80))
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
status() { curl -sf "http://$HTTP0/status.json"; }
rpc() { curl -sf -m 5 -H 'Content-Type: application/json' -d "$1" "http://127.0.0.1:$CHAIN_PORT"; }

ANCHOR=
if [[ -f "$SPEC" ]] && command -v npm >/dev/null; then
    echo "starting chopsticks on 127.0.0.1:$CHAIN_PORT (log: $WORK/chopsticks.log)" >&2
    DDC_CHAIN_SPEC=$(realpath "$SPEC") scripts/chopsticks.sh "$CHAIN_PORT" >"$WORK/chopsticks.log" 2>&1 &
    CHAIN_PID=$!
    for _ in $(seq 180); do
        kill -0 "$CHAIN_PID" 2>/dev/null || break
        head=$(rpc '{"id":1,"jsonrpc":"2.0","method":"chain_getHeader","params":[]}' 2>/dev/null) || head=
        [[ -n "$head" ]] && (( $(json 'int(d["result"]["number"], 16)' <<<"$head") >= 1 )) && ANCHOR=1 && break
        sleep 1
    done
    [[ -n "$ANCHOR" ]] || { echo "chopsticks did not come up:" >&2; tail -20 "$WORK/chopsticks.log" >&2; exit 1; }
else
    echo "no chain spec at $SPEC or no npm: node-0 will not anchor (no anchoring section on the page)" >&2
fi

"$DDC" cluster up --nodes 3 --data-dir "$CLUSTER" --base-port "$BASE" >/dev/null
if [[ -n "$ANCHOR" ]]; then
    # Node-0 anchors 2 s eras; its key (the cluster's node key) pays, so fund it on chopsticks
    # (System.Account, as README.md "Anchoring" shows), then restart it with an [anchor] section.
    "$DDC" cluster stop-node --data-dir "$CLUSTER" --node 0 >/dev/null
    ID=$(json 'd["nodes"][0]["id"]' <"$CLUSTER/cluster-state.json")
    rpc "$(python3 - "$ID" <<'EOF'
import hashlib, json, sys
pk = bytes.fromhex(sys.argv[1])
key = bytes.fromhex("26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9") \
    + hashlib.blake2b(pk, digest_size=16).digest() + pk
u32, u128 = (lambda n: n.to_bytes(4, "little")), (lambda n: n.to_bytes(16, "little"))
value = u32(0) + u32(0) + u32(1) + u32(0) + u128(1000 * 10**10) + u128(0) + u128(0) + u128(1 << 127)
print(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "dev_setStorage",
                  "params": [[["0x" + key.hex(), "0x" + value.hex()]]]}))
EOF
)" >/dev/null
    printf '\n[anchor]\nchain_url = "ws://127.0.0.1:%s"\nera_ms = 2000\n' "$CHAIN_PORT" >>"$CLUSTER/node-0/config.toml"
    "$DDC" cluster start-node --data-dir "$CLUSTER" --node 0 >/dev/null
fi

# Two streams: the first name node-0 leads is sealed (coded into shards on every member), the other stays open.
SEALED= OPEN=
for name in orders payments invoices clicks events audit ledger shipments refunds sessions; do
    leader=$("$DDC" cluster placement "$name" --data-dir "$CLUSTER" --plain | awk 'NR == 1 {print $2}')
    if [[ -z "$SEALED" && "$leader" == node-0 ]]; then SEALED=$name; elif [[ -z "$OPEN" ]]; then OPEN=$name; fi
done
[[ -n "$SEALED" && -n "$OPEN" ]] || { echo "no stream name led by node-0 among the candidates" >&2; exit 1; }
seq 1 5000 | sed 's/^/order record /' | "$DDC" --server "127.0.0.1:$BASE" produce "$SEALED" >/dev/null
seq 1 1200 | sed 's/^/payment record /' | "$DDC" --server "127.0.0.1:$((BASE + 1))" produce "$OPEN" >/dev/null
# Wait (when anchoring) until node-0 anchored `$1` eras.
anchored() {
    [[ -n "$ANCHOR" ]] || return 0
    for _ in $(seq 60); do
        [[ $(status | json 'len([e for e in d["anchoring"]["recent"] if e["block_hash"]])') -ge $1 ]] && return 0
        sleep 1
    done
    echo "node-0 did not anchor $1 era(s) within 60 s; see $CLUSTER/node-0/server.log" >&2
    exit 1
}
# Two sealed segments, each in an era of its own, then an open one with records.
"$DDC" --server "127.0.0.1:$BASE" seal "$SEALED" >/dev/null
anchored 1
seq 1 800 | sed 's/^/order record after the seal /' | "$DDC" --server "127.0.0.1:$BASE" produce "$SEALED" >/dev/null
"$DDC" --server "127.0.0.1:$BASE" seal "$SEALED" >/dev/null
anchored 2
seq 1 300 | sed 's/^/order record after two seals /' | "$DDC" --server "127.0.0.1:$BASE" produce "$SEALED" >/dev/null

"$DDC" cluster stop-node --data-dir "$CLUSTER" --node 2 >/dev/null
DEAD=$(json 'd["nodes"][2]["id"]' <"$CLUSTER/cluster-state.json")
for _ in $(seq 30); do
    [[ $(status | json "[m['state'] for m in d['cluster']['members'] if m['id'] == '$DEAD'][0]") == down ]] && break
    sleep 1
done
sleep 3 # a snapshot or two more, so the page shows the follower unreachable too

mkdir -p "$(dirname "$OUT")"
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$WORK/chromium" \
    --screenshot="$OUT" --window-size="1280,$HEIGHT" "http://$HTTP0/" 2>"$WORK/chromium.log" \
    || { cat "$WORK/chromium.log" >&2; exit 1; }
echo "wrote $OUT ($(stat -c %s "$OUT") bytes): node-0's page, streams $SEALED (sealed) and $OPEN, node-2 stopped${ANCHOR:+, anchoring on chopsticks}" >&2
