#!/usr/bin/env bash
# RFC 2544-style benchmark of hbgw with its own generator (hbgw-gen), against
# dpdk-testpmd io forwarding on the same devices in the same invocation.
#
#   perf/bench.sh [--sizes 64,128,512,1518,imix] [--trial-secs 2] [--latency-secs 5]
#                 [--max-rate 30M] [--loss-tolerance 0] [--duts testpmd,hbgw,hbgw-policy] [--no-record]
#                 [--out DIR] [--no-huge]
#   HBGW_BENCH_BIN=DIR: use the hbgw and hbgw-gen binaries in DIR instead of building (tests do).
#
# Topology (one host, no NIC): two net_memif links. The device under test is
# the memif server on both (lan.sock, wan.sock); hbgw-gen is the client, sends
# on LAN and receives on WAN.
#   cores: DUT  -l 0,1  (forwarding/worker on lcore 1; main thread and hbgw's
#                        control plane on lcore 0)
#          gen  -l 0    (its send/receive loop on lcore 0, shared with the
#                        DUT's mostly idle main thread)
# For each frame size, for each DUT (testpmd; hbgw with no policy; hbgw with
# the realistic state of perf/make-state.py: 100 rules, 100,000 endpoints,
# 1,000,000 indicators, and the app mix: 20% DNS, 10% TLS, 5% HTTP, 5% of
# them naming a listed domain), hbgw-gen:
#   1. calibrates at a low rate (which frames the DUT drops on purpose: they
#      are sent but not counted as lost),
#   2. binary-searches the highest rate with loss <= the tolerance (0 = NDR),
#   3. measures latency at 10%, 50% and 90% of that rate.
# Output: a table on stdout; results, .hlog files and SVG plots in
# perf/results/<UTC time>/; the table and command appended to perf/RESULTS.md
# (not with --no-record, which also writes the results to a temp dir, or to --out DIR).
# --no-huge runs every process without hugepages: a functional run (tests), not a measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=64,128,512,1518,imix
trial_secs=2
latency_secs=5
max_rate=30M
loss=0
duts=testpmd,hbgw,hbgw-policy
record=1
out_dir=
no_huge=0
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes=$2; shift 2 ;;
        --trial-secs) trial_secs=$2; shift 2 ;;
        --latency-secs) latency_secs=$2; shift 2 ;;
        --max-rate) max_rate=$2; shift 2 ;;
        --loss-tolerance) loss=$2; shift 2 ;;
        --duts) duts=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        --out) out_dir=$2; shift 2 ;;
        --no-huge) no_huge=1; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1: see perf/bench.sh --help" >&2; exit 2 ;;
    esac
done

if [ -n "${HBGW_BENCH_BIN:-}" ]; then
    bin=$HBGW_BENCH_BIN
else
    scripts/install-deps.sh >/dev/null
    cargo build --release --bin hbgw --bin hbgw-gen 2>&1 | tail -1
    bin=target/release
fi
if [ "$no_huge" = 1 ]; then
    mem=(--no-huge --no-shconf)
    [ "$record" = 1 ] && { echo "bench: --no-huge runs are functional checks, not measurements: add --no-record" >&2; exit 2; }
else
    scripts/setup-hugepages.sh 1024 >/dev/null || { echo "bench: needs hugepages (run as root)" >&2; exit 1; }
    mem=(--huge-unlink)
fi

stamp=$(date -u +%Y%m%dT%H%MZ)
if [ -n "$out_dir" ]; then res=$out_dir
elif [ "$record" = 1 ]; then res=perf/results/$stamp
else res=$(mktemp -d /tmp/hbgw-bench-res.XXXXXX); fi
mkdir -p "$res"
work=$(mktemp -d /tmp/hbgw-bench.XXXXXX)
dut_pid=
cleanup() {
    if [ -n "$dut_pid" ] && kill -0 "$dut_pid" 2>/dev/null; then kill -INT "$dut_pid"; wait "$dut_pid" || true; fi
    rm -rf "$work" "/var/run/dpdk/bench-dut-$$"
}
trap cleanup EXIT

if [[ ,$duts, == *,hbgw-policy,* ]]; then
    python3 perf/make-state.py "$work/state" >/dev/null
    cat > "$work/policy.toml" <<TOML
[enforcement]
policy = "$work/state/policy.toml"
threat_feed = "$work/state/feed.toml"
endpoints = "$work/state/endpoints.toml"
TOML
fi

# rsize=14: 16384-slot rings, which ride out a few milliseconds of descheduling at Mpps rates
# (a NIC queue of 4096 descriptors does the same at line rate); both ends use the same size.
memif() { echo "net_memif$1,role=$2,socket=$work/$3.sock,socket-abstract=no,rsize=14"; }

# start_dut NAME: starts the DUT in the background (dut_pid) and waits until it serves.
start_dut() {
    rm -f "$work"/*.sock
    local log="$work/$1.log"
    case $1 in
        testpmd)
            dpdk-testpmd -l 0,1 --no-pci "${mem[@]}" -m 1024 --file-prefix "bench-dut-$$" \
                --vdev "$(memif 0 server lan)" --vdev "$(memif 1 server wan)" -- \
                --forward-mode=io --no-mlockall --total-num-mbufs=32768 --stats-period 3600 >"$log" 2>&1 &
            dut_pid=$! ;;
        hbgw|hbgw-policy)
            local extra=()
            [ "$1" = hbgw-policy ] && extra=(--config "$work/policy.toml")
            "$bin/hbgw" -l 0,1 "${mem[@]}" -m 1024 --file-prefix "bench-dut-$$" \
                --vdev "$(memif 0 server lan)" --vdev "$(memif 1 server wan)" -- \
                --port-pair net_memif0,net_memif1 --stats-socket "$work/stats.sock" --live off "${extra[@]}" >"$log" 2>&1 &
            dut_pid=$! ;;
    esac
    for _ in $(seq 1 600); do
        if [ -S "$work/lan.sock" ] && [ -S "$work/wan.sock" ]; then
            [ "$1" = testpmd ] && return 0
            "$bin/hbgw" stats --socket "$work/stats.sock" >/dev/null 2>&1 && return 0
        fi
        kill -0 "$dut_pid" 2>/dev/null || { echo "bench: $1 exited at start:" >&2; tail -5 "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "bench: $1 did not come up in 60 s" >&2; exit 1
}

stop_dut() {
    kill -INT "$dut_pid" 2>/dev/null || echo "bench: the DUT had already exited (testpmd with net_memif may crash when its peer leaves, after the trials)" >&2
    wait "$dut_pid" || true; dut_pid=
    rm -rf "/var/run/dpdk/bench-dut-$$"
}

IFS=, read -r -a size_list <<<"$sizes"
IFS=, read -r -a dut_list <<<"$duts"
for size in "${size_list[@]}"; do
    for dut in "${dut_list[@]}"; do
        traffic=(--traffic udp)
        [ "$dut" = hbgw-policy ] && traffic=(--traffic app --endpoints 1000 --first-mac 02:10:00:00:00:00
            --first-ip 10.100.0.0 --first-server 203.0.113.10 --hit-domain bad15.example15.com --hit-percent 5)
        start_dut "$dut"
        echo "== $dut, frame $size"
        "$bin/hbgw-gen" -l 0 --no-pci "${mem[@]}" -m 512 --file-prefix "bench-gen-$$" \
            --vdev "$(memif 0 client lan)" --vdev "$(memif 1 client wan)" -- \
            --size "$size" "${traffic[@]}" --search --max-rate "$max_rate" --ignore-link-speed \
            --resolution 0.005 --loss-tolerance "$loss" --trial-secs "$trial_secs" --latency-secs "$latency_secs" \
            --label "$dut" --json "$res/$dut-$size.json" --hlog "$res/$dut-$size.hlog" 2>&1 | grep -v '^EAL\|^TELEMETRY\|mp action'
        stop_dut
    done
    "$bin/hbgw-gen" plot --out "$res/latency-$size.svg" --title "end-to-end latency, $size-byte frames (memif, one worker core)" \
        "$res"/*-"$size".hlog >/dev/null || echo "bench: no latency trials to plot for $size (no rate passed)" >&2
done

results=()
for size in "${size_list[@]}"; do for dut in "${dut_list[@]}"; do results+=("$res/$dut-$size.json"); done; done
table=$("$bin/hbgw-gen" report --baseline testpmd "${results[@]}")
echo
echo "$table"
echo "results, histograms and plots: $res"
if [ "$record" = 1 ]; then
    {
        echo
        echo "### RFC 2544 throughput and latency (hbgw-gen over net_memif) — $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "Command: \`perf/bench.sh ${args[*]}\` (release build; $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); DPDK $(pkg-config --modversion libdpdk))."
        echo "DUT on -l 0,1 (one forwarding core, lcore 1); hbgw-gen on lcore 0, which it shares with the DUT's main thread"
        echo "(and hbgw's control plane). Throughput: highest rate with loss <= $loss, binary search, ${trial_secs} s trials"
        echo "(a rate fails when two trials in a row at it lose frames: one descheduling of a busy-polling process on this"
        echo "shared VM loses frames at any rate);"
        echo "latency: ${latency_secs} s at 10/50/90% of it, end to end (generator TSC stamp to its receipt, through both memif links)."
        echo "cycles/pkt = TSC Hz / throughput (one DUT core, always polling). hbgw-policy: perf/make-state.py's state and the app mix"
        echo "(frames the policy drops on purpose are sent, and not counted as lost). Histograms and plots: \`$res/\`."
        echo
        echo "$table"
    } >> perf/RESULTS.md
    echo "appended to perf/RESULTS.md"
fi
