#!/usr/bin/env bash
# Short fuzz runs of every parser target (fuzz/fuzz_targets/*), each checked
# against a library oracle. A smoke test for CI, not a fuzzing campaign:
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]     (default 15)
#
# Uses cargo-fuzz (installed from crates.io if missing) on the machine's stable
# toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z sanitizer flags
# cargo-fuzz passes, so no nightly toolchain is needed. Long campaigns: see
# fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
targets=$(cargo fuzz list --fuzz-dir fuzz)
for t in $targets; do
    echo "fuzz-smoke: $t for ${secs}s"
    # The seed corpus lives in target/ so the checkout stays clean.
    corpus="$CARGO_TARGET_DIR/corpus/$t"
    mkdir -p "$corpus"
    cargo fuzz run --fuzz-dir fuzz "$t" "$corpus" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY|thread|panicked|ERROR)" || true
    # cargo fuzz exits non-zero on a crash; pipefail is off for the grep above,
    # so check the artifacts directory instead.
    if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz-smoke: $t found a crash: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz-smoke: ${secs}s per target, no crash"
