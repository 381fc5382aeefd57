#!/usr/bin/env bash
# Backlog benchmark (issue 14): fill one queue with N messages of SIZE bytes
# and no consumer, idle, drain; prints msg/s, the broker's peak RSS per
# phase and the data directory's size. With "persistent", the queue is
# durable and the messages persistent, and the broker is restarted (clean
# stop, then kill -9) with the backlog in place to show RSS after recovery,
# the time until it accepts connections and until a first message is
# delivered (a basic.get, needs python3 with pika). WARREN_BENCH names the
# load generator (default ./target/release/warren-bench).
# Usage: bench/deep-queue.sh BIN N SIZE [persistent]   (BIN: a warren binary;
# warren-bench from target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 n=$2 size=$3 mode=${4:-transient}
bench=${WARREN_BENCH:-./target/release/warren-bench}
dir=$(mktemp -d /tmp/warren-deep.XXXXXX)
log=$(mktemp)
port=5690
start() {
  : >"$log"
  RUST_LOG=info WARREN_AMQP__BIND=127.0.0.1:$port WARREN_MQTT__BIND=127.0.0.1:0 \
    WARREN_MQTT__WS_BIND= WARREN_HTTP__BIND=127.0.0.1:0 WARREN_STORE__DIR="$dir" "$bin" 2>"$log" &
  wpid=$!
  for _ in $(seq 1 1200); do grep -q "AMQP listener bound" "$log" && return; sleep 0.1; done
  echo "warren did not start"; cat "$log"; exit 1
}
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$wpid/status; }
trap 'kill $wpid 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
start
run_bench() {
  $bench --addr 127.0.0.1:$port --pid "$wpid" --deep "$n" --body-size "$size" --data-dir "$dir" \
    --label "$(basename "$bin")" "$@"
}
if [ "$mode" = persistent ]; then
  run_bench --persistent --no-drain
  for how in TERM KILL; do
    t0=$(date +%s.%N)
    kill -$how $wpid; wait $wpid || true
    start
    t1=$(date +%s.%N)
    python3 -c "import pika; ch = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', $port)).channel(); assert ch.basic_get('bench.deep')[2] is not None"
    t2=$(date +%s.%N)
    echo "after SIG$how and restart: accepting connections after $(echo "$t1 - $t0" | bc) s, first delivery after $(echo "$t2 - $t0" | bc) s; RSS $(rss); $(grep -o 'recovered.*' "$log" | head -1)"
    sleep 5
    echo "  idle RSS 5 s later: $(rss)"
  done
  run_bench --persistent --drain-only
  sleep 3
  echo "data dir 3 s after the drain: $(du -sm "$dir" | cut -f1) MiB"
fi
[ "$mode" = persistent ] || run_bench
