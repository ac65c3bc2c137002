#!/usr/bin/env bash
# Install what building, running and testing hbgw needs, from Debian's packages:
# DPDK 22.11 (libdpdk-dev: headers, libraries and the PMDs; dpdk-dev: dpdk-testpmd
# for benchmarks), clang/libclang for bindgen, pkg-config, openssl (a real TLS
# peer for the heartbeat tests), slapd and ldap-utils (a real OpenLDAP server for
# the heartbeat user-directory test), and the Rust toolchain check. Idempotent: does nothing when everything is present.
set -euo pipefail

need=()
pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null || need+=(libdpdk-dev)
command -v dpdk-testpmd >/dev/null || need+=(dpdk-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
test -x /usr/sbin/slapd || command -v slapd >/dev/null || need+=(slapd)
command -v ldapsearch >/dev/null || need+=(ldap-utils)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found: install the Rust toolchain (https://rustup.rs) and re-run" >&2
    exit 1
fi
echo "install-deps: $(pkg-config --modversion libdpdk | sed 's/^/DPDK /'), $(cargo --version)"
