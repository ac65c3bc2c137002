#!/usr/bin/env bash
# Build hbgw (release) and run it.
#
#   scripts/run.sh                       the built-in default: two virtual ports fed by a built-in
#                                        traffic source, live counters and latency every second;
#                                        Ctrl-C stops it and prints the final table
#   scripts/run.sh [EAL args] -- [app args]   anything else, passed to hbgw as given
#
# Installs missing packages and reserves hugepages (as root) first; without hugepages it
# runs with --no-huge (slower, fine for a look). EAL never probes PCI devices unless you
# name them with -a.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bin hbgw

huge=()
if ! scripts/setup-hugepages.sh 1024 >/dev/null 2>&1; then
    echo "run: no hugepages (not root, or the kernel refused): running with --no-huge" >&2
    huge=(--no-huge)
fi

if [ $# -eq 0 ]; then
    set -- -l 0,1 "${huge[@]}" -- --live line
elif [ ${#huge[@]} -gt 0 ]; then
    set -- "${huge[@]}" "$@"
fi
exec target/release/hbgw "$@"
