#!/usr/bin/env bash
# Keep the control plane's CPU from halting when it idles.
#
#   scripts/cpu-idle-poll.sh CPU...          the CPUs poll instead of halting when idle
#   scripts/cpu-idle-poll.sh --off CPU...    back to the kernel's default (any idle state)
#   scripts/cpu-idle-poll.sh --status        each CPU's setting
#
# Why: between Central's updates the control plane's CPU is idle, and waking a halted CPU
# costs each update's first milliseconds. On a KVM guest (perf/RESULTS.md, 2026-11-23) a
# 100,000-indicator update took the gateway 24.5-32.7 ms at the median with the CPU halting and
# 20.2 ms with it polling. A polling CPU draws full power while idle: use it on the CPU the
# control plane is pinned to (the DPDK main lcore), never on every CPU. The workers' CPUs
# poll anyway (poll-mode drivers).
#
# This sets the CPU's PM QoS resume latency (power/pm_qos_resume_latency_us) to "n/a", which
# lets the cpuidle governor pick only the polling state on that CPU; it lasts until --off or
# a reboot. Needs root. Exit 0 on success, 1 with a one-line reason otherwise.
set -euo pipefail

die() { echo "cpu-idle-poll: $*" >&2; exit 1; }

knob() { echo "/sys/devices/system/cpu/cpu$1/power/pm_qos_resume_latency_us"; }

status() {
    local c n
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
        n=${c##*/cpu}
        [ -r "$(knob "$n")" ] || continue
        case "$(cat "$(knob "$n")")" in
            n/a) echo "CPU $n: polls when idle" ;;
            0) echo "CPU $n: any idle state (default)" ;;
            *) echo "CPU $n: idle states waking within $(cat "$(knob "$n")") us" ;;
        esac
    done
}

set_cpus() {
    local value=$1
    shift
    [ $# -gt 0 ] || die "name the CPUs: scripts/cpu-idle-poll.sh 0 (see --status)"
    local c
    for c in "$@"; do
        [[ "$c" =~ ^[0-9]+$ ]] || die "\`$c\` is not a CPU number: pass numbers such as 0 2"
        [ -e "$(knob "$c")" ] || die "CPU $c has no PM QoS setting ($(knob "$c") missing): is it online? see --status"
    done
    [ -w "$(knob "$1")" ] || die "cannot write $(knob "$1"): run as root"
    for c in "$@"; do
        echo "$value" > "$(knob "$c")" || die "cannot set CPU $c: the kernel refused $value"
    done
    status
}

case "${1:-}" in
    --status) status ;;
    --off) shift; set_cpus 0 "$@" ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
    -*) die "unknown option $1: use CPU..., --off CPU... or --status" ;;
    *) set_cpus n/a "$@" ;;
esac
