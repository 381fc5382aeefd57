#!/usr/bin/env bash
# Instructions per delivered message under callgrind, independent of load on
# the machine: the difference between a 6 s and a 16 s run of one scenario
# (so start-up is not counted), divided by the difference in messages.
# Usage: bench/instructions-per-message.sh BIN SCENARIO   (needs valgrind;
# mqtt-* scenarios speak MQTT)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?warren binary}; scenario=${2:?scenario}
bench=${WARREN_BENCH:-./target/release/warren-bench}
run() { # seconds -> "instructions messages"
  local dir; dir=$(mktemp -d)
  WARREN_AMQP__BIND=127.0.0.1:5703 WARREN_MQTT__BIND=127.0.0.1:1903 WARREN_MQTT__WS_BIND=127.0.0.1:15704 \
    WARREN_HTTP__BIND=127.0.0.1:15703 WARREN_STORE__DIR="$dir/data" \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" 2>"$dir/log" &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "AMQP listener bound" "$dir/log" && break; sleep 0.5; done
  local addr=(--addr 127.0.0.1:5703)
  case "$scenario" in mqtt-*) addr=(--mqtt --addr 127.0.0.1:1903) ;; esac
  local row; row=$("$bench" "${addr[@]}" --seconds "$1" --label cg --scenarios "$scenario" | grep "^| cg")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local ir; ir=$(grep -E "^summary|^totals" "$dir/cg.out" | head -1 | awk '{print $2}')
  local delivered; delivered=$(echo "$row" | cut -d'|' -f5 | tr -d ' ')
  echo "$ir $((delivered * $1))"
  rm -rf "$dir"
}
read -r i1 m1 < <(run 6)
read -r i2 m2 < <(run 16)
echo "$scenario: $(( (i2 - i1) / (m2 - m1) )) instructions per delivered message ($m1 / $m2 messages)"
