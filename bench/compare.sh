#!/usr/bin/env bash
# Side-by-side run of warren-bench against Warren and another AMQP broker.
# Usage: bench/compare.sh OTHER_ADDR OTHER_PID [scenarios] [seconds]
# Starts a release build of Warren on 127.0.0.1:5680 with a fresh data
# directory (stopped at the end by its PID); the other broker (e.g. RabbitMQ
# on 127.0.0.1:5673) must already run.
set -euo pipefail
cd "$(dirname "$0")/.."
other_addr=${1:?other broker address}
other_pid=${2:?other broker pid}
scenarios=${3:-all}
seconds=${4:-10}
cargo build --release -p warren -p warren-bench
dir=$(mktemp -d)
log=$(mktemp)
RUST_LOG=warn,warren=info WARREN_AMQP__BIND=127.0.0.1:5680 WARREN_STORE__DIR="$dir" ./target/release/warren 2>"$log" &
wpid=$!
trap 'kill $wpid 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
for _ in $(seq 1 100); do grep -q "AMQP listener bound" "$log" && break; sleep 0.1; done
./target/release/warren-bench --addr 127.0.0.1:5680 --pid "$wpid" --label warren --scenarios "$scenarios" --seconds "$seconds"
./target/release/warren-bench --addr "$other_addr" --pid "$other_pid" --label other --scenarios "$scenarios" --seconds "$seconds" | tail -n +3
