#!/usr/bin/env bash
# Reserve and mount 2 MiB hugepages for DPDK.
#
#   scripts/setup-hugepages.sh [PAGES|SIZE]   reserve at least PAGES pages (default 1024 = 2 GiB),
#                                             or SIZE such as 512M / 2G; mount hugetlbfs
#   scripts/setup-hugepages.sh --status       show reserved/free pages and mounts
#   scripts/setup-hugepages.sh --release      free the pages this machine holds (unmount if we mounted)
#
# Idempotent: never lowers a reservation that is already large enough, never mounts twice.
# Needs root (writes /sys and mounts). Exit 0 on success, 1 with a one-line reason otherwise.
set -euo pipefail

PAGE_KB=2048
SYSDIR=/sys/kernel/mm/hugepages/hugepages-${PAGE_KB}kB
MOUNT=${HBGW_HUGE_MOUNT:-/dev/hugepages}

die() { echo "setup-hugepages: $*" >&2; exit 1; }

status() {
    if [ ! -d "$SYSDIR" ]; then
        echo "2 MiB hugepages: not supported by this kernel"
        return
    fi
    local total free
    total=$(cat "$SYSDIR/nr_hugepages")
    free=$(cat "$SYSDIR/free_hugepages")
    echo "2 MiB hugepages: $total reserved, $free free ($((total * 2)) MiB reserved)"
    local mounts
    mounts=$(awk '$3 == "hugetlbfs" {print $2 " (" $4 ")"}' /proc/mounts)
    if [ -n "$mounts" ]; then
        echo "hugetlbfs mounted at: $mounts"
    else
        echo "hugetlbfs: not mounted (run scripts/setup-hugepages.sh)"
    fi
}

pages_from_arg() {
    local arg=$1
    case "$arg" in
        *[Gg]) echo $(( ${arg%[Gg]} * 1024 / 2 )) ;;
        *[Mm]) echo $(( (${arg%[Mm]} + 1) / 2 )) ;;
        ''|*[!0-9]*) die "cannot read size '$arg': give a page count (1024) or a size (512M, 2G)" ;;
        *) echo "$arg" ;;
    esac
}

case "${1:-}" in
    --status|-s) status; exit 0 ;;
    --help|-h) sed -n '2,12p' "$0"; exit 0 ;;
    --release)
        [ "$(id -u)" -eq 0 ] || die "must run as root to release hugepages: sudo $0 --release"
        if awk -v m="$MOUNT" '$2 == m && $3 == "hugetlbfs" {found=1} END {exit !found}' /proc/mounts; then
            umount "$MOUNT" || die "cannot unmount $MOUNT: a process still uses it"
        fi
        echo 0 > "$SYSDIR/nr_hugepages"
        status
        exit 0 ;;
esac

want=$(pages_from_arg "${1:-1024}")
[ "$want" -gt 0 ] || die "asked for 0 pages: give a page count (1024) or a size (2G)"
[ -d "$SYSDIR" ] || die "this kernel has no 2 MiB hugepages ($SYSDIR missing): run with --no-huge instead"
[ "$(id -u)" -eq 0 ] || die "must run as root to reserve hugepages: sudo $0 ${1:-}"

have=$(cat "$SYSDIR/nr_hugepages")
if [ "$have" -lt "$want" ]; then
    echo "$want" > "$SYSDIR/nr_hugepages" 2>/dev/null || die "the kernel refused to reserve $want pages (write to $SYSDIR/nr_hugepages failed): are you in a container without /sys write access?"
    got=$(cat "$SYSDIR/nr_hugepages")
    if [ "$got" -lt "$want" ]; then
        die "only $got of $want pages could be reserved (memory is fragmented or short): ask for fewer, or reserve at boot with hugepages=$want on the kernel command line"
    fi
fi

if ! awk '$3 == "hugetlbfs" {found=1} END {exit !found}' /proc/mounts; then
    mkdir -p "$MOUNT"
    mount -t hugetlbfs -o pagesize=2M nodev "$MOUNT" || die "cannot mount hugetlbfs at $MOUNT: check that you are root and the kernel has hugetlbfs"
fi
status
