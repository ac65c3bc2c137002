#!/usr/bin/env bash
# Run every test of hbgw: unit tests, end-to-end tests through the real binary on
# DPDK virtual devices, and a short fuzz run of every parser. Installs what it needs first
# (Debian packages, hugepages when it can). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Hugepage tests run when pages can be reserved; everything else uses --no-huge.
if scripts/setup-hugepages.sh 512; then
    export HBGW_TEST_HUGEPAGES=1
else
    echo "test: hugepages unavailable here; the hugepage end-to-end test is skipped" >&2
fi

# HdrHistogram's Python reader, to check that --hlog files read with a standard tool.
if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore hdrhistogram >/dev/null 2>&1 \
    && python3 -c 'import hdrh.log' 2>/dev/null; then
    export HBGW_TEST_PY_HDRH=1
else
    echo "test: could not install the Python hdrhistogram package; the hlog cross-check is skipped" >&2
fi

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo build --workspace --all-targets --locked
cargo test --workspace --locked

# Every parser against its oracle under libFuzzer, briefly (long runs: fuzz/README.md).
scripts/fuzz-smoke.sh "${HBGW_FUZZ_SECONDS:-15}"
