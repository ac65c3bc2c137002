#!/usr/bin/env bash
# Concurrent heartbeat sessions on the gateway's one control-plane thread: N
# simulated endpoints (each its own pinned certificate, real TLS 1.3) connect
# to a running gateway and heartbeat every 15 s. Reports the time for all to
# connect (handshakes per second), the control-plane thread's CPU while they
# heartbeat, memory per session, and a reconnect storm (all sessions dropped
# and re-established at once).
#
#   perf/bench-sessions.sh [N] [--no-record]      (default N = 10000)
#
# The simulator runs on the same two cores as the gateway (its worker spins on
# lcore 1), so handshake rates are a floor; the figures say what shares a core.
set -euo pipefail
cd "$(dirname "$0")/.."
n=10000
record=1
for a in "$@"; do
    case "$a" in
        --no-record) record=0 ;;
        *) n=$a ;;
    esac
done

scripts/install-deps.sh >/dev/null
cargo build --release --bin hbgw 2>&1 | tail -1
cargo build --release -p hbgw-controlplane --bin hbgw-endpoint-sim 2>&1 | tail -1
ulimit -n $(( n * 2 + 4096 )) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
out=$(mktemp -d /tmp/hbgw-sessions.XXXXXX)
gw="" sim=""
cleanup() {
    [ -n "$sim" ] && kill "$sim" 2>/dev/null || true
    [ -n "$gw" ] && kill -INT "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT

target/release/hbgw-endpoint-sim certs --endpoints "$n" --dir "$out/pki" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$out/hbgw.toml" <<TOML
[heartbeat]
listen = "127.0.0.1:$port"
server_cert = "$out/pki/gateway.pem"
server_key = "$out/pki/gateway.key"
endpoint_certs = ["$out/pki/pinned.pem"]
TOML
target/release/hbgw -l 0,1 --no-pci --no-huge --file-prefix "sess-$$" --vdev net_null0,no-rx=1 --vdev net_null1,no-rx=1 -- \
    --config "$out/hbgw.toml" --live off --stats-socket "$out/s.sock" > "$out/gw.log" 2>&1 &
gw=$!
for _ in $(seq 100); do [ -S "$out/s.sock" ] && break; sleep 0.1; done
ctl_tid=$(grep -l hbgw-control /proc/$gw/task/*/comm | head -1 | cut -d/ -f5)
rss() { awk '/VmRSS/ {print $2}' /proc/$gw/status; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$gw/task/$ctl_tid/stat; }
connected() { target/release/hbgw endpoints --json --socket "$out/s.sock" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["summary"]["connected"])'; }

wait_all() { # prints seconds until all n are connected
    local start=$(date +%s.%N)
    for _ in $(seq 1200); do
        [ "$(connected)" -ge "$n" ] && break
        sleep 0.5
    done
    python3 -c "import time; print(f'{time.time() - $start:.1f}')"
}

rss0=$(rss)
# The fleet powers on at a ramp (RAMP endpoints/s); the storm below comes back all at once,
# each endpoint retrying with jittered exponential backoff.
target/release/hbgw-endpoint-sim run --endpoints "$n" --dir "$out/pki" --gateway "127.0.0.1:$port" --lists none --ramp "${RAMP:-1000}" > "$out/sim.log" 2>&1 &
sim=$!
t_connect=$(wait_all)
sleep 5
rss1=$(rss)
c0=$(cpu_ticks); sleep 30; c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
cpu=$(python3 -c "print(f'{($c1 - $c0) / $hz / 30 * 100:.1f}')")
per_session=$(python3 -c "print(f'{($rss1 - $rss0) * 1024 / $n:.0f}')")

# Reconnect storm: every session drops at once and comes back.
kill "$sim"; wait "$sim" 2>/dev/null || true
for _ in $(seq 120); do [ "$(connected)" -eq 0 ] && break; sleep 0.5; done
target/release/hbgw-endpoint-sim run --endpoints "$n" --dir "$out/pki" --gateway "127.0.0.1:$port" --lists none > "$out/sim2.log" 2>&1 &
sim=$!
t_storm=$(wait_all)
rate=$(python3 -c "print(f'{$n / max($t_storm, 0.1):.0f}')")

line="| $n | ${t_connect} s | ${t_storm} s (${rate}/s) | ${cpu}% | $(( (rss1 - rss0) / 1024 )) MiB (${per_session} B/session) |"
echo "$line"
if [ "$record" = 1 ]; then
    {
        echo
        echo "### Concurrent heartbeat sessions — $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "Command: \`perf/bench-sessions.sh $n\` ($(nproc) cores; the simulator, the gateway's control-plane thread"
        echo "and its main lcore share core 0 and the OS schedules them; the worker spins on lcore 1; 15 s heartbeats, TLS 1.3)."
        echo
        echo "Fleet start ramped at ${RAMP:-1000} endpoints/s; the storm reconnects all at once with jittered exponential backoff."
        echo
        echo "| sessions | all connected after | reconnect storm (handshakes/s) | control-plane thread CPU while heartbeating | gateway memory for the sessions |"
        echo "|---|---|---|---|---|"
        echo "$line"
    } >> perf/RESULTS.md
fi
