#!/usr/bin/env bash
# Bridge throughput of hbgw (no policy) next to dpdk-testpmd io forwarding, on the
# same virtual devices, in the same invocation. One worker core (lcore 1); the main
# lcore 0 hosts EAL's main thread (and, for hbgw, the control-plane thread).
#
#   perf/bench-bridge.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 10 s, 2 rounds)
#
# Scenarios (64-byte frames):
#   pcap->null   net_pcap rx_pcap=<1024 frames>,infinite_rx=1  <->  net_null,no-rx=1
#   null<->null  net_null  <->  net_null  (both generate; the framework floor)
# The sources are pull-driven (they produce exactly what the forwarder takes), so
# the forwarding rate with zero drops is the loss-free rate for this set-up.
# Each run's rate is the median of its per-second Tx rates, skipping the first 2 s.
# Output: a table on stdout, appended with the command to perf/RESULTS.md
# (pass --no-record to skip that).
set -euo pipefail
cd "$(dirname "$0")/.."


out=$(mktemp -d /tmp/hbgw-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
. perf/lib.sh
bench_args "$@"
bench_setup
python3 perf/make-pcap.py "$out/64.pcap" --size 60 --count 1024

declare -a rows
for scenario in pcap-null null-null; do
    case $scenario in
        pcap-null) vdevs=(--vdev "net_pcap0,rx_pcap=$out/64.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1"); PAIR=net_pcap0,net_null0 ;;
        null-null) vdevs=(--vdev net_null0 --vdev net_null1); PAIR=net_null0,net_null1 ;;
    esac
    for r in $(seq 1 "$rounds"); do
        tp=$(run_testpmd "$scenario" "${vdevs[@]}")
        hb=$(run_hbgw "$scenario" "$PAIR" "${vdevs[@]}")
        rows+=("$(printf '| %-10s | %d | %8s | %8s | %s | %s | %s | %s |' "$scenario" "$r" \
            "$(mpps "$tp")" "$(mpps "$hb")" "$(ratio "$hb" "$tp")" "$(cycles_per_packet "$hb")" "$(last_drops)" "$(last_latency)")")
        echo "${rows[-1]}"
    done
done

header='| scenario | round | testpmd Mpps | hbgw Mpps | ratio | hbgw cycles/pkt | hbgw drops | hbgw latency ns p50/p90/p99/p99.9/p99.99/max |
|---|---|---|---|---|---|---|---|'
if [ "$record" = 1 ]; then
    {
        echo
        echo "### Bridge, no policy, 64-byte frames — $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "Command: \`perf/bench-bridge.sh $secs $rounds\` (release build; $(machine))."
        echo "One worker on lcore 1 for both; lcore 0 runs the main thread (hbgw: also the control plane)."
        echo
        echo "$header"
        printf '%s\n' "${rows[@]}"
    } >> perf/RESULTS.md
    echo "appended to perf/RESULTS.md"
fi
