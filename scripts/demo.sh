#!/usr/bin/env bash
# The whole story on one machine: the gateway (built-in traffic source on two
# virtual ports), its Security Heartbeat service, and 8 simulated endpoints
# with their own certificates. After ~10 s endpoint ep1 turns Red: its traffic
# is cut off (watch the drop rate), the other endpoints are told, and the
# Active threat response / heartbeat log fills; after ~30 s it is Green again.
# Ctrl-C stops everything and prints the final table.
#
#   scripts/demo.sh [--no-huge]      (called by scripts/run.sh with no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

huge=("$@")
{ cargo build --release --bin hbgw && cargo build --release -p hbgw-controlplane --bin hbgw-endpoint-sim; } 2>&1 | tail -1
demo=$(mktemp -d /tmp/hbgw-demo.XXXXXX)
gw_pid="" sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill -INT "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    echo
    echo "demo files (config, certificates, event log): $demo"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

target/release/hbgw-endpoint-sim certs --endpoints 8 --dir "$demo/pki" >/dev/null
cat > "$demo/hbgw.toml" <<TOML
[enforcement]
policy = "$PWD/scripts/demo/policy.toml"
threat_feed = "$PWD/scripts/demo/feed.toml"

[events]
log = "$demo/events.jsonl"

[heartbeat]
listen = "127.0.0.1:8347"
server_cert = "$demo/pki/gateway.pem"
server_key = "$demo/pki/gateway.key"
endpoint_certs = ["$demo/pki/pinned.pem"]
interval_ms = 2000

[stats]
socket = "$demo/hbgw.sock"
TOML

echo "== starting the gateway (live line: rates, drops, latency; every second)"
target/release/hbgw -l 0,1 --no-pci "${huge[@]}" -- --config "$demo/hbgw.toml" --live line &
gw_pid=$!
for _ in $(seq 50); do [ -S "$demo/hbgw.sock" ] && break; sleep 0.2; done

echo "== 8 simulated endpoints connect over TLS (ep1 turns red at 10 s, green at 30 s)"
target/release/hbgw-endpoint-sim run --endpoints 8 --dir "$demo/pki" --gateway 127.0.0.1:8347 \
    --script "10s:ep1=red,30s:ep1=green" --lists first > "$demo/endpoints.log" 2>&1 &
sim_pid=$!

show() {
    echo
    echo "== $1"
    target/release/hbgw endpoints --socket "$demo/hbgw.sock" || true
    target/release/hbgw stats --socket "$demo/hbgw.sock" | sed -n '/^Workers/,/^$/p' || true
    grep "endpoint list" "$demo/endpoints.log" | tail -1 || true
    tail -n 2 "$demo/events.jsonl" 2>/dev/null || true
    echo
}
sleep 6;  show "all green: traffic crosses (unlisted), DNS for malware.example is dropped by the MDR feed"
sleep 8;  show "ep1 is RED: its traffic is dropped (source_heartbeat), the other endpoints got the red list"
sleep 18; show "ep1 is green again: its traffic crosses again"
echo "== running until Ctrl-C (try: hbgw explain --socket $demo/hbgw.sock --src-mac 02:5e:00:00:00:01 --src-ip 10.77.0.2 --dst-ip 198.51.100.10)"
wait "$gw_pid"
