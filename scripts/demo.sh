#!/usr/bin/env bash
# The whole story on one machine, with no NIC:
#   * hbgw-central, the reference Central: it holds the policy and the MDR
#     threat feed, and it is the CA that issues the endpoints' certificates;
#   * the gateway, enrolled with Central: it bridges its built-in traffic
#     (8 endpoints on the LAN talking to servers on the WAN) on two virtual
#     ports, runs the Security Heartbeat service, and uploads its logs;
#   * 8 simulated endpoints, each with the certificate Central issued it.
# After ~10 s endpoint ep1 turns Red: its traffic is cut off (watch the drop
# rate), the other endpoints are told, and the heartbeat log fills; after
# ~30 s it is Green again. Then an analyst posts an indicator at Central (a
# server the endpoints talk to) and the gateway drops that traffic within
# milliseconds; the Active threat response log reaches Central.
# Ctrl-C stops everything and prints the final table.
#
#   scripts/demo.sh [--no-huge]      (called by scripts/run.sh with no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

huge=("$@")
{ cargo build --release --bin hbgw && cargo build --release -p hbgw-controlplane --bin hbgw-endpoint-sim --bin hbgw-central; } 2>&1 | tail -1
demo=$(mktemp -d /tmp/hbgw-demo.XXXXXX)
gw_pid="" sim_pid="" central_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill -INT "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    [ -n "$central_pid" ] && kill "$central_pid" 2>/dev/null || true
    echo
    echo "demo files (Central's data, config, certificates, event log): $demo"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Central on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
C=(target/release/hbgw-central --data "$demo/central")
"${C[@]}" init >/dev/null
"${C[@]}" serve --listen "127.0.0.1:$port" > "$demo/central.log" 2>&1 &
central_pid=$!
for _ in $(seq 100); do [ -f "$demo/central/url" ] && break; sleep 0.1; done
echo "== Central serves on https://127.0.0.1:$port; the analyst sets the policy and the MDR feed there"
"${C[@]}" policy scripts/demo/policy.toml >/dev/null
"${C[@]}" feeds --enabled true --action log_and_drop >/dev/null
"${C[@]}" indicator add malware.example --audit-id MDR-DEMO-1 >/dev/null
"${C[@]}" indicator add 198.51.100.29 --audit-id MDR-DEMO-2 >/dev/null
# Central issues each endpoint's certificate (gateways pin exactly these) and
# the gateway's heartbeat server certificate.
for i in $(seq 0 7); do "${C[@]}" endpoint add "ep$i" --out "$demo/pki" >/dev/null; done
"${C[@]}" gateway-cert gw1 --out "$demo/gw" >/dev/null
token=$("${C[@]}" token)

cat > "$demo/hbgw.toml" <<TOML
[central]
url = "https://127.0.0.1:$port"
ca = "$demo/central/ca.pem"
state_dir = "$demo/state"
enrollment_token = "$token"
wait_s = 5

[events]
log = "$demo/events.jsonl"

[heartbeat]
listen = "127.0.0.1:8347"
server_cert = "$demo/gw/gateway.pem"
server_key = "$demo/gw/gateway.key"
interval_ms = 2000

[stats]
socket = "$demo/hbgw.sock"
TOML

echo "== starting the gateway; it enrolls with Central and takes its policy, feed and certificates (live line every second)"
target/release/hbgw -l 0,1 --no-pci "${huge[@]}" -- --config "$demo/hbgw.toml" --live line &
gw_pid=$!
for _ in $(seq 100); do [ -S "$demo/hbgw.sock" ] && break; sleep 0.2; done

echo "== 8 simulated endpoints connect over TLS (ep1 turns red at 10 s, green at 30 s)"
target/release/hbgw-endpoint-sim run --endpoints 8 --dir "$demo/pki" --gateway 127.0.0.1:8347 \
    --script "10s:ep1=red,30s:ep1=green" --lists first > "$demo/endpoints.log" 2>&1 &
sim_pid=$!

show() {
    echo
    echo "== $1"
    target/release/hbgw endpoints --socket "$demo/hbgw.sock" || true
    target/release/hbgw stats --socket "$demo/hbgw.sock" | sed -n '/^Workers/,/^$/p;/^Central/p' || true
    grep "endpoint list" "$demo/endpoints.log" | tail -1 || true
    tail -n 2 "$demo/events.jsonl" 2>/dev/null || true
    echo
}
sleep 6;  show "all green: traffic crosses, DNS for malware.example is dropped by the MDR feed from Central"
sleep 8;  show "ep1 is RED: its traffic is dropped (source_heartbeat), the other endpoints got the red list"
sleep 18; show "ep1 is green again: its traffic crosses again"
echo "== the analyst posts indicator 198.51.100.12 (a server the endpoints use) at Central"
"${C[@]}" indicator add 198.51.100.12 --audit-id MDR-DEMO-3 >/dev/null
sleep 3;  show "traffic to 198.51.100.12 is dropped (threat_indicator), and the hits are logged"
echo "== what Central received from the gateway: $("${C[@]}" logs --json --limit 100000 | grep -c MDR-DEMO-3 || true) log events for MDR-DEMO-3 so far; its health summary:"
"${C[@]}" health | head -c 600; echo
echo "== running until Ctrl-C (try: hbgw explain --socket $demo/hbgw.sock --src-mac 02:5e:00:00:00:01 --src-ip 10.77.0.2 --dst-ip 198.51.100.12)"
wait "$gw_pid"
