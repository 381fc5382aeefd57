#!/usr/bin/env bash
# Side-by-side MQTT run of warren-bench against Warren and another MQTT
# broker. Usage: bench/compare-mqtt.sh OTHER_ADDR OTHER_PID [seconds] [idle]
# (e.g. mosquitto started by hand on 127.0.0.1:1885). Idle connections are
# measured on a fresh Warren, since earlier scenarios grow its heap.
set -euo pipefail
cd "$(dirname "$0")/.."
other_addr=${1:?other broker address}
other_pid=${2:?other broker pid}
seconds=${3:-10}
idle=${4:-10000}
cargo build --release -p warren -p warren-bench
run_warren() {
  dir=$(mktemp -d); log=$(mktemp)
  RUST_LOG=warn,warren=info WARREN_AMQP__BIND=127.0.0.1:0 WARREN_HTTP__BIND=127.0.0.1:0 \
    WARREN_MQTT__BIND=127.0.0.1:1886 WARREN_MQTT__WS_BIND=127.0.0.1:15686 WARREN_STORE__DIR="$dir" ./target/release/warren 2>"$log" &
  wpid=$!
  for _ in $(seq 1 100); do grep -q "MQTT listener bound" "$log" && break; sleep 0.1; done
  ./target/release/warren-bench --mqtt --addr 127.0.0.1:1886 --pid "$wpid" --label warren "$@"
  kill $wpid; wait $wpid || true; rm -rf "$dir" "$log"
}
scen=mqtt-qos0-open,mqtt-qos0-closed,mqtt-qos1-open,mqtt-qos1-closed,mqtt-fanin-100pub,mqtt-latency-5k
# One generator process per scenario (see docs/benchmarks.md, known issue).
for sc in ${scen//,/ }; do run_warren --scenarios "$sc" --seconds "$seconds" | tail -n 1; done
run_warren --scenarios mqtt-idle --idle-connections "$idle" | tail -n 1
./target/release/warren-bench --mqtt --addr "$other_addr" --pid "$other_pid" --label other --scenarios "$scen" --seconds "$seconds" | tail -n +3
echo "(restart the other broker for a fair idle figure)"
./target/release/warren-bench --mqtt --addr "$other_addr" --pid "$other_pid" --label other --scenarios mqtt-idle --idle-connections "$idle" | tail -n 1
