#!/usr/bin/env bash
# Build hbgw (release) and run it.
#
#   scripts/run.sh                       the whole story (scripts/demo.sh): the gateway on two virtual
#                                        ports fed by a built-in traffic source, its heartbeat service
#                                        and 8 simulated endpoints; one turns red and is cut off;
#                                        live counters and latency every second; Ctrl-C stops it
#   scripts/run.sh [EAL args] -- [app args]   anything else, passed to hbgw as given
#
# Installs missing packages and reserves hugepages (as root) first; without hugepages it
# runs with --no-huge (slower, fine for a look). EAL never probes PCI devices unless you
# name them with -a.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bin hbgw && cargo build --release -p hbgw-controlplane --bin hbgw-endpoint-sim

huge=()
if ! scripts/setup-hugepages.sh 1024 >/dev/null 2>&1; then
    echo "run: no hugepages (not root, or the kernel refused): running with --no-huge" >&2
    huge=(--no-huge)
fi

if [ $# -eq 0 ]; then
    exec scripts/demo.sh "${huge[@]}"
elif [ ${#huge[@]} -gt 0 ]; then
    set -- "${huge[@]}" "$@"
fi
exec target/release/hbgw "$@"
