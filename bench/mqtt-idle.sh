#!/usr/bin/env bash
# RSS per idle MQTT connection on a freshly started Warren: N (default
# 20,000) connections that CONNECT and then stay silent, measured by
# warren-bench's mqtt-idle scenario. Usage:
#   bench/mqtt-idle.sh [WARREN_BIN] [N] [BENCH_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/warren}
n=${2:-20000}
bench=${3:-target/release/warren-bench}
# Both processes need one descriptor per connection plus a few: stay
# under the hard limit (20,000 on the benchmark machine).
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ $((n + 200)) -gt "$hard" ]; then
  n=$((hard - 200)); echo "(limited to $n connections by ulimit -Hn $hard)" >&2
fi
ulimit -n "$hard"
dir=$(mktemp -d); log=$(mktemp)
RUST_LOG=warn,warren=info WARREN_AMQP__BIND=127.0.0.1:0 WARREN_HTTP__BIND=127.0.0.1:0 \
  WARREN_MQTT__BIND=127.0.0.1:0 WARREN_MQTT__WS_BIND=127.0.0.1:0 WARREN_STORE__DIR="$dir" "$bin" 2>"$log" &
wpid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*MQTT listener bound on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
"$bench" --mqtt --addr "127.0.0.1:$port" --pid "$wpid" --label warren \
  --scenarios mqtt-idle --idle-connections "$n" | tail -n 1
kill $wpid; wait $wpid || true; rm -rf "$dir" "$log"
