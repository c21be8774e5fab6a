#!/usr/bin/env bash
# Smoke test: every fuzz target (or the ones named) for ~10 seconds (or $1),
# starting from the committed seeds, with a throwaway working corpus. Exits
# nonzero on any crash.
#
#   fuzz/smoke.sh [seconds_per_target] [target ...]
set -uo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
secs="${1:-10}"
shift || true
FUZZ_WORK_DIR="$work" "$fuzz_dir/soak.sh" "$secs" "$@"
