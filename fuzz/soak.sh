#!/usr/bin/env bash
# Run every fuzz target in turn for SECONDS_PER_TARGET (default 600) each.
# Targets are those `cargo fuzz list` names (every [[bin]] in fuzz/Cargo.toml:
# the ddc-formats, ddc-auth and ddc-anchor decoders), or the ones given.
#
#   fuzz/soak.sh [seconds_per_target] [target ...]
#
# Works with the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the
# -Zsanitizer=address flag cargo-fuzz passes (see fuzz/README.md).
#
# Each target starts from its committed seeds (fuzz/corpus/<target>) plus a
# working corpus that persists between soaks in $FUZZ_WORK_DIR/<target>
# (default fuzz/target/soak-corpus, git-ignored); new inputs libFuzzer finds go
# there, never into the committed seeds. Crash reproducers land in
# fuzz/artifacts/<target>/ (git-ignored) and are printed in hex.
#
# Prints one summary line per target with its execution count; exits 1 if any
# target crashed (or failed to build/run), 0 otherwise.
# Extra libFuzzer flags: FUZZ_ARGS="-max_len=65536 -jobs=2" fuzz/soak.sh 3600
set -uo pipefail

secs="${1:-600}"
shift || true
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work_root="${FUZZ_WORK_DIR:-$fuzz_dir/target/soak-corpus}"
cd "$fuzz_dir" || exit 2

export RUSTC_BOOTSTRAP=1
# cargo caches rustc's answers in target/.rustc_info.json, keyed without
# RUSTC_BOOTSTRAP: one run without it caches "-Z is only accepted on nightly"
# and later runs with it fail the same way. A cached failure is worth nothing.
if grep -qs '"success":false' target/.rustc_info.json; then
    rm -f target/.rustc_info.json
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 2
fi

echo "== building ${#targets[@]} targets (${targets[*]})"
for t in "${targets[@]}"; do
    if ! cargo fuzz build "$t"; then
        echo "build of $t failed" >&2
        exit 2
    fi
done

failed=0
summary=()
log_dir="$(mktemp -d)"
for t in "${targets[@]}"; do
    work="$work_root/$t"
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    log="$log_dir/$t.log"
    echo "== $t: ${secs}s"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')"
    cov="$(grep -oE '#[0-9]+.*cov: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+')"
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-16s ok     execs=%-10s %s' "$t" "${execs:-?}" "${cov:-}")")
    else
        failed=1
        summary+=("$(printf '%-16s FAILED execs=%-10s exit=%s log=%s' "$t" "${execs:-?}" "$rc" "$log")")
        # The panic (message and the first lines of its values), else libFuzzer's own error.
        if grep -q "panicked at" "$log"; then
            sed -n "/panicked at/,+3p" "$log" | head -4 | cut -c1-400
        else
            grep -E "ERROR:|error|SUMMARY:" "$log" | head -8
        fi
        # libFuzzer names the file it wrote: "Test unit written to <path>".
        for a in $(grep -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //'); do
            [ -f "$a" ] || continue
            echo "reproducer $a ($(stat -c %s "$a") bytes):"
            od -An -v -tx1 "$a" | tr -d ' \n' | fold -w 128
            echo
            echo "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $a"
        done
    fi
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
