#!/usr/bin/env bash
# Backlog fill and drain side by side (issue 14): Warren, then RabbitMQ 3.10
# with a lazy classic queue (x-queue-mode=lazy) and a CQv2 queue
# (x-queue-version=2), each round in turn, in one run. N messages of SIZE
# bytes, transient (RabbitMQ pages them too), no consumer while filling.
# Usage: bench/compare-deep-rabbitmq.sh N SIZE [ROUNDS]
# Needs target/release/{warren,warren-bench} and rabbitmq-server (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 size=$2 rounds=${3:-1}
bench=./target/release/warren-bench
rdir=$(mktemp -d /tmp/rabbit-deep.XXXXXX)
chmod 777 "$rdir"
export RABBITMQ_NODENAME=warrendeep@localhost RABBITMQ_NODE_PORT=5693 RABBITMQ_DIST_PORT=25693 \
  RABBITMQ_MNESIA_BASE=$rdir/mnesia RABBITMQ_LOG_BASE=$rdir/log RABBITMQ_CONFIG_FILE=$rdir/rabbitmq \
  RABBITMQ_ENABLED_PLUGINS_FILE=$rdir/enabled_plugins RABBITMQ_PID_FILE=$rdir/pid
cat >"$rdir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:5693
loopback_users = none
vm_memory_high_watermark.relative = 0.6
disk_free_limit.absolute = 1GB
CONF
echo "[]." >"$rdir/enabled_plugins"
rabbit_start() {
  rabbitmq-server >"$rdir/stdout" 2>&1 &
  for _ in $(seq 1 300); do
    [ -s "$rdir/pid" ] && rabbitmqctl -n "$RABBITMQ_NODENAME" await_startup >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "rabbitmq did not start"; cat "$rdir/stdout"; exit 1
}
rabbit_stop() {
  rabbitmqctl -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
}
trap 'rabbit_stop; rm -rf "$rdir"' EXIT
rabbit_start
rpid=$(cat "$rdir/pid")
for r in $(seq 1 "$rounds"); do
  echo "== round $r"
  bench/deep-queue.sh target/release/warren "$n" "$size"
  for qargs in x-queue-mode=lazy x-queue-version=2; do
    rabbitmqctl -n "$RABBITMQ_NODENAME" delete_queue bench.deep >/dev/null 2>&1 || true
    $bench --addr 127.0.0.1:5693 --pid "$rpid" --deep "$n" --body-size "$size" \
      --queue-args "$qargs" --data-dir "$rdir/mnesia" --label "rabbitmq($qargs)"
  done
done
