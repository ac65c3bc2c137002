# Shared by perf/bench-*.sh: build, hugepages, and one run of testpmd or hbgw on
# given virtual devices, each reporting the median of its per-second Tx rates
# (the first 2 s skipped). Source it; set `secs` and `out` first.

# bench_args "$@": sets secs (default 10), rounds (default 2) and record (0 with --no-record).
bench_args() {
    record=1
    local args=()
    for a in "$@"; do
        case "$a" in
            --no-record) record=0 ;;
            *) args+=("$a") ;;
        esac
    done
    secs=${args[0]:-10}
    rounds=${args[1]:-2}
}

bench_setup() {
    scripts/install-deps.sh >/dev/null
    cargo build --release --bin hbgw 2>&1 | tail -1
    scripts/setup-hugepages.sh 1024 >/dev/null || { echo "bench: needs hugepages (run as root)" >&2; exit 1; }
    eal_common=(-l 0,1 --no-pci --huge-unlink -m 1536)
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# run_testpmd NAME [EAL vdev args...]: testpmd io forwarding; sum of per-port Tx-pps.
run_testpmd() {
    local name=$1; shift
    local log="$out/testpmd-$name-$RANDOM.log"
    timeout -s INT "$((secs + 3))" dpdk-testpmd "${eal_common[@]}" --file-prefix "bench-tp-$$" "$@" -- \
        --forward-mode=io --no-mlockall --total-num-mbufs=32768 --stats-period 1 >"$log" 2>&1 || true
    # testpmd leaves EAL's runtime directory behind; it was ours alone.
    rm -rf "/var/run/dpdk/bench-tp-$$"
    awk '/Tx-pps:/ {sum += $2; n++} n == 2 {print sum; sum = 0; n = 0}' "$log" | tail -n +3 | median
}

# run_hbgw NAME PAIR [EAL vdev args...] -- [app args...]: hbgw; its per-interval tx rate.
run_hbgw() {
    local name=$1 pair=$2; shift 2
    local eal=() app=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do eal+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    app=("$@")
    local log="$out/hbgw-$name-$RANDOM.log"
    target/release/hbgw "${eal_common[@]}" --file-prefix "bench-hbgw-$$" "${eal[@]}" -- \
        --port-pair "$pair" --duration "$secs" --live line --stats-socket "$out/s.sock" "${app[@]}" >"$log" 2>&1 || {
        echo "bench: hbgw failed, see below" >&2; tail -5 "$log" >&2; exit 1; }
    cp "$log" "$out/last-hbgw.log"
    grep -E '^\[ *[0-9.]+s\] rx' "$log" | sed -E 's/.* tx +([0-9.]+)([kMG]?)pps.*/\1 \2/' \
        | awk '{m = ($2=="G")?1e9:($2=="M")?1e6:($2=="k")?1e3:1; print $1*m}' | tail -n +3 | median
}

# From the last hbgw run's final table:
last_latency() { grep -E '^  all, total' "$out/last-hbgw.log" | awk '{print $4"/"$5"/"$6"/"$7"/"$8"/"$9}'; }
last_drops() { grep -E '^  [0-9]+ +[0-9]+ ' "$out/last-hbgw.log" | awk '{d += $5} END {print d+0}'; }
last_rx() { grep -E '^  [0-9]+ +[0-9]+ ' "$out/last-hbgw.log" | awk '{d += $3} END {print d+0}'; }

cpu_hz() { awk '/cpu MHz/ {print $4*1e6; exit}' /proc/cpuinfo; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "n/a"}'; }
cycles_per_packet() { awk -v a="$1" -v hz="$(cpu_hz)" 'BEGIN {if (a > 0) printf "%.1f", hz / a; else print "n/a"}'; }
mpps() { awk -v x="$1" 'BEGIN {printf "%.2f", x / 1e6}'; }
machine() { echo "$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(pkg-config --modversion libdpdk | sed 's/^/DPDK /')"; }
