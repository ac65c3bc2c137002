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

record=1
args=()
for a in "$@"; do
    case "$a" in
        --no-record) record=0 ;;
        *) args+=("$a") ;;
    esac
done
secs=${args[0]:-10}
rounds=${args[1]:-2}

scripts/install-deps.sh >/dev/null
cargo build --release --bin hbgw 2>&1 | tail -1
scripts/setup-hugepages.sh 1024 >/dev/null || { echo "bench: needs hugepages (run as root)" >&2; exit 1; }

out=$(mktemp -d /tmp/hbgw-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
python3 perf/make-pcap.py "$out/64.pcap" --size 60 --count 1024

eal_common=(-l 0,1 --no-pci --huge-unlink -m 1024)

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# testpmd: sum of per-port Tx-pps per stats period.
run_testpmd() {
    local name=$1; shift
    local log="$out/testpmd-$name-$RANDOM.log"
    timeout -s INT "$((secs + 3))" dpdk-testpmd "${eal_common[@]}" --file-prefix "bench-tp-$$" "$@" -- \
        --forward-mode=io --no-mlockall --total-num-mbufs=32768 --stats-period 1 >"$log" 2>&1 || true
    # Each period prints one "Tx-pps:" per port; sum them per period.
    awk '/Tx-pps:/ {sum += $2; n++} n == ports {print sum; sum = 0; n = 0}' ports="$PORTS" "$log" \
        | tail -n +3 | median
}

run_hbgw() {
    local name=$1; shift
    local log="$out/hbgw-$name-$RANDOM.log"
    target/release/hbgw "${eal_common[@]}" --file-prefix "bench-hbgw-$$" "$@" -- \
        --port-pair "$PAIR" --duration "$secs" --live line --stats-socket "$out/s.sock" >"$log" 2>&1 || {
        echo "bench: hbgw failed, see below" >&2; tail -5 "$log" >&2; exit 1; }
    cp "$log" "$out/last-hbgw.log"
    grep -E '^\[ *[0-9.]+s\] rx' "$log" | sed -E 's/.* tx +([0-9.]+)([kMG]?)pps.*/\1 \2/' \
        | awk '{m = ($2=="G")?1e9:($2=="M")?1e6:($2=="k")?1e3:1; print $1*m}' | tail -n +3 | median
}

latency() { # p50 p90 p99 p99.9 p99.99 max from the final table's "all, total" row
    grep -E '^  all, total' "$out/last-hbgw.log" | awk '{print $4"/"$5"/"$6"/"$7"/"$8"/"$9}'
}
drops() {
    grep -E '^  [0-9]+ +[0-9]+ ' "$out/last-hbgw.log" | awk '{d += $5} END {print d+0}'
}

declare -a rows
for scenario in pcap-null null-null; do
    case $scenario in
        pcap-null) vdevs=(--vdev "net_pcap0,rx_pcap=$out/64.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1"); PAIR=net_pcap0,net_null0 ;;
        null-null) vdevs=(--vdev net_null0 --vdev net_null1); PAIR=net_null0,net_null1 ;;
    esac
    PORTS=2
    for r in $(seq 1 "$rounds"); do
        tp=$(run_testpmd "$scenario" "${vdevs[@]}")
        hb=$(run_hbgw "$scenario" "${vdevs[@]}")
        ratio=$(awk -v a="$hb" -v b="$tp" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "n/a"}')
        cpp=$(awk -v a="$hb" -v hz="$(awk '/cpu MHz/ {print $4*1e6; exit}' /proc/cpuinfo)" 'BEGIN {if (a > 0) printf "%.1f", hz / a; else print "n/a"}')
        rows+=("$(printf '| %-10s | %d | %8.2f | %8.2f | %s | %s | %s | %s |' "$scenario" "$r" \
            "$(awk -v x="$tp" 'BEGIN{print x/1e6}')" "$(awk -v x="$hb" 'BEGIN{print x/1e6}')" "$ratio" "$cpp" "$(drops)" "$(latency)")")
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
        echo "Command: \`perf/bench-bridge.sh $secs $rounds\` (release build; $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(pkg-config --modversion libdpdk | sed 's/^/DPDK /'))."
        echo "One worker on lcore 1 for both; lcore 0 runs the main thread (hbgw: also the control plane)."
        echo
        echo "$header"
        printf '%s\n' "${rows[@]}"
    } >> perf/RESULTS.md
    echo "appended to perf/RESULTS.md"
fi
