#!/usr/bin/env bash
# Worker throughput with a realistic enforcement state, next to the no-policy
# bridge and dpdk-testpmd io forwarding on exactly the same devices, in one run.
#
#   perf/bench-enforce.sh [SECONDS_PER_RUN] [ROUNDS] [--no-record]   (defaults: 10 s, 2)
#
# State (perf/make-state.py): 100 rules (the accepting rule is #98, so every
# frame walks the list), 100,000 endpoints, 1,000,000 threat indicators.
# Traffic: 4096 frames from random endpoints replayed by net_pcap (infinite_rx)
# into net_null: 20% DNS queries, 10% TLS ClientHellos, 5% HTTP requests, the
# rest 64-byte TCP/UDP; ~2% hit indicators. One worker core (lcore 1).
# Then the per-stage split (perf/pipeline_stages.rs) on the same state and frames.
set -euo pipefail
cd "$(dirname "$0")/.."


out=$(mktemp -d /tmp/hbgw-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
. perf/lib.sh
bench_args "$@"
bench_setup
python3 perf/make-state.py "$out/state" >/dev/null
cat > "$out/hbgw.toml" <<TOML
[enforcement]
policy = "$out/state/policy.toml"
threat_feed = "$out/state/feed.toml"
endpoints = "$out/state/endpoints.toml"
TOML

vdevs=(--vdev "net_pcap0,rx_pcap=$out/state/traffic.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1")
pair=net_pcap0,net_null0
declare -a rows
for r in $(seq 1 "$rounds"); do
    tp=$(run_testpmd enforce "${vdevs[@]}")
    br=$(run_hbgw bridge "$pair" "${vdevs[@]}")
    br_lat=$(last_latency)
    en=$(run_hbgw enforce "$pair" "${vdevs[@]}" -- --config "$out/hbgw.toml")
    en_drop=$(awk -v d="$(last_drops)" -v r="$(last_rx)" 'BEGIN {if (r > 0) printf "%.1f%%", 100 * d / r; else print "-"}')
    rows+=("$(printf '| %d | %s | %s (%s) | %s (%s) | %s / %s | %s | %s | %s |' "$r" "$(mpps "$tp")" \
        "$(mpps "$br")" "$(ratio "$br" "$tp")" "$(mpps "$en")" "$(ratio "$en" "$tp")" \
        "$(cycles_per_packet "$br")" "$(cycles_per_packet "$en")" "$en_drop" "$br_lat" "$(last_latency)")")
    echo "${rows[-1]}"
done

stages=$(cargo run --release --quiet --example pipeline_stages -- "$out/state" 2>&1 | tail -n 15)
echo "$stages"

if [ "$record" = 1 ]; then
    {
        echo
        echo "### Enforcement throughput, realistic state — $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "Command: \`perf/bench-enforce.sh $secs $rounds\` (release build; $(machine))."
        echo "State from \`perf/make-state.py\`: 100 rules (accepting rule #98), 100,000 endpoints, 1,000,000 indicators;"
        echo "4096 frames (20% DNS, 10% TLS ClientHello, 5% HTTP, rest 64 B TCP/UDP; mean 76 B) replayed by"
        echo "net_pcap infinite_rx into net_null. One worker on lcore 1; lcore 0 runs the main thread and control plane."
        echo
        echo '| round | testpmd Mpps | hbgw bridge Mpps (x testpmd) | hbgw full policy Mpps (x testpmd) | cycles/pkt bridge / full | full: dropped | latency ns bridge p50/p90/p99/p99.9/p99.99/max | latency ns full |'
        echo '|---|---|---|---|---|---|---|---|'
        printf '%s\n' "${rows[@]}"
        echo
        echo "Per stage, on the same state and frames (\`cargo run --release --example pipeline_stages -- STATE_DIR\`, no DPDK):"
        echo
        echo '```'
        echo "$stages"
        echo '```'
    } >> perf/RESULTS.md
    echo "appended to perf/RESULTS.md"
fi
