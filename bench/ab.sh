#!/usr/bin/env bash
# Interleaved A/B of two Warren binaries: ROUNDS rounds of (A, B), each broker
# fresh with its own data directory, one load generator for both.
# Usage: bench/ab.sh BIN_A BIN_B [scenarios] [seconds] [rounds] [--mqtt]
# BENCH_ARGS adds generator flags (e.g. BENCH_ARGS="--idle-connections 5000").
# Example: bench/ab.sh /tmp/before/warren ./target/release/warren \
#            1to1-autoack-open,1to1-ack-p100-closed,fanout-4 5 3
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?binary A}; b=${2:?binary B}
scenarios=${3:-1to1-autoack-open,1to1-ack-p100-closed,fanout-4,persistent-16b-1pub}
seconds=${4:-5}; rounds=${5:-3}; mqtt=${6:-}
bench=${WARREN_BENCH:-./target/release/warren-bench}
for r in $(seq 1 "$rounds"); do
  for side in A B; do
    bin=$a; [ "$side" = B ] && bin=$b
    dir=$(mktemp -d)
    WARREN_AMQP__BIND=127.0.0.1:5711 WARREN_MQTT__BIND=127.0.0.1:1911 \
      WARREN_MQTT__WS_BIND=127.0.0.1:15712 WARREN_HTTP__BIND=127.0.0.1:15711 WARREN_STORE__DIR="$dir/data" \
      RUST_LOG=warn,warren=info "$bin" 2>"$dir/log" &
    pid=$!
    for _ in $(seq 1 100); do grep -q "MQTT listener bound" "$dir/log" && break; sleep 0.1; done
    if [ "$mqtt" = --mqtt ]; then addr=(--mqtt --addr 127.0.0.1:1911); else addr=(--addr 127.0.0.1:5711); fi
    # shellcheck disable=SC2086
    "$bench" "${addr[@]}" --pid "$pid" --label "$side-r$r" --seconds "$seconds" \
      --scenarios "$scenarios" ${BENCH_ARGS:-} | grep "^| $side"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
