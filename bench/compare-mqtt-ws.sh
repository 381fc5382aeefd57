#!/usr/bin/env bash
# MQTT over TCP against MQTT over WebSocket, one broker process: ROUNDS rounds,
# each running every scenario over TCP and then over WebSocket (interleaved),
# then idle connections over both.
# Usage: bench/compare-mqtt-ws.sh [scenarios] [seconds] [rounds] [idle connections]
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=${1:-mqtt-qos0-open,mqtt-qos0-closed,mqtt-qos1-open,mqtt-qos1-closed}
seconds=${2:-5}; rounds=${3:-3}; idle=${4:-5000}
bin=${WARREN_BIN:-./target/release/warren}
bench=${WARREN_BENCH:-./target/release/warren-bench}
dir=$(mktemp -d)
WARREN_AMQP__BIND=127.0.0.1:5731 WARREN_MQTT__BIND=127.0.0.1:1931 \
  WARREN_MQTT__WS_BIND=127.0.0.1:15731 WARREN_HTTP__BIND=127.0.0.1:15732 \
  WARREN_STORE__DIR="$dir/data" RUST_LOG=warn,warren=info "$bin" 2>"$dir/log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do grep -q "MQTT WebSocket listener bound" "$dir/log" && break; sleep 0.1; done
targets=(--mqtt --addr 127.0.0.1:1931 --ws-addr 127.0.0.1:15731 --pid "$pid")
"$bench" "${targets[@]}" --scenarios none | head -n 2
for r in $(seq 1 "$rounds"); do
  "$bench" "${targets[@]}" --label "r$r" --seconds "$seconds" --scenarios "$scenarios" | grep "^| r"
done
"$bench" "${targets[@]}" --label idle --scenarios mqtt-idle --idle-connections "$idle" | grep "^| idle"
