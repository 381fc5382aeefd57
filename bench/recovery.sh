#!/usr/bin/env bash
# Recovery benchmark: fill a durable queue with N persistent messages, stop
# Warren, start it again and report recovery time (from its log) and RSS.
# Usage: bench/recovery.sh [N]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release -p warren -p warren-bench
dir=$(mktemp -d)
log=$(mktemp)
start_warren() {
  RUST_LOG=info WARREN_AMQP__BIND=127.0.0.1:5681 WARREN_STORE__DIR="$dir" ./target/release/warren 2>"$log" &
  wpid=$!
  for _ in $(seq 1 600); do grep -q "AMQP listener bound" "$log" && return; sleep 0.1; done
  echo "warren did not start"; cat "$log"; exit 1
}
start_warren
trap 'kill $wpid 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
./target/release/warren-bench --addr 127.0.0.1:5681 --fill "$n"
echo "data directory: $(du -sh "$dir" | cut -f1)"
kill -TERM $wpid; wait $wpid || true
start_warren
grep -o "recovered.*" "$log"
echo "RSS after recovery: $(awk '/VmRSS/ {print $2, $3}' /proc/$wpid/status)"
