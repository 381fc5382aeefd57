#!/usr/bin/env bash
# Definition changes through a three-node cluster, side by side in one run:
# Warren (3 processes on 127.0.0.1, Raft via openraft) and RabbitMQ 3.10 (3
# nodes on this machine joined with rabbitmqctl join_cluster), rounds
# interleaved. Each round: N durable queue declares from one connection,
# then N from CONNS connections spread over the nodes (bench/cluster-declares.py).
# Usage: bench/compare-cluster-rabbitmq.sh [N] [CONNS] [ROUNDS]
# Needs target/release/warren, rabbitmq-server (Debian) and pika.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000} conns=${2:-8} rounds=${3:-3}
root=$(mktemp -d /tmp/cluster-bench.XXXXXX)
chmod 777 "$root"
echo "warren-cluster-bench-secret-0001" >"$root/secret"
wpids=() rnodes=()

warren_start() {
  local seeds=127.0.0.1:25781,127.0.0.1:25782,127.0.0.1:25783
  for i in 1 2 3; do
    WARREN_CLUSTER__BIND=127.0.0.1:2578$i WARREN_CLUSTER__SEEDS=$seeds \
      WARREN_CLUSTER__SECRET_FILE="$root/secret" WARREN_CLUSTER__NODE_NAME=warren$i \
      WARREN_AMQP__BIND=127.0.0.1:577$i WARREN_MQTT__BIND=127.0.0.1:0 WARREN_MQTT__WS_BIND= \
      WARREN_HTTP__BIND=127.0.0.1:0 WARREN_STORE__DIR="$root/warren$i" \
      target/release/warren >"$root/warren$i.log" 2>&1 &
    wpids+=($!)
  done
  for _ in $(seq 1 100); do
    grep -q "cluster leader is" "$root/warren1.log" && grep -q "AMQP listener bound" "$root/warren3.log" && return
    sleep 0.2
  done
  echo "warren cluster did not form"; tail "$root"/warren*.log; exit 1
}

rabbit_env() {
  local i=$1
  export RABBITMQ_NODENAME=wbench$i@localhost RABBITMQ_NODE_PORT=568$i RABBITMQ_DIST_PORT=2568$((i + 5)) \
    RABBITMQ_MNESIA_BASE=$root/r$i/mnesia RABBITMQ_LOG_BASE=$root/r$i/log RABBITMQ_CONFIG_FILE=$root/r$i/rabbitmq \
    RABBITMQ_ENABLED_PLUGINS_FILE=$root/r$i/enabled_plugins RABBITMQ_PID_FILE=$root/r$i/pid
}

rabbit_start() {
  for i in 1 2 3; do
    mkdir -p "$root/r$i"
    chmod 777 "$root/r$i"
    printf 'listeners.tcp.default = 127.0.0.1:568%s\nloopback_users = none\n' "$i" >"$root/r$i/rabbitmq.conf"
    echo "[]." >"$root/r$i/enabled_plugins"
    (rabbit_env "$i"; rabbitmq-server >"$root/r$i/stdout" 2>&1 &)
    rnodes+=("wbench$i@localhost")
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do
      rabbitmqctl -n "wbench$i@localhost" await_startup >/dev/null 2>&1 && break
      sleep 0.5
    done
  done
  for i in 2 3; do
    rabbitmqctl -n "wbench$i@localhost" stop_app >/dev/null
    rabbitmqctl -n "wbench$i@localhost" join_cluster wbench1@localhost >/dev/null
    rabbitmqctl -n "wbench$i@localhost" start_app >/dev/null
  done
  rabbitmqctl -n wbench1@localhost cluster_status | grep -A4 "Running Nodes" || true
}

cleanup() {
  for p in "${wpids[@]}"; do kill "$p" 2>/dev/null || true; done
  for r in "${rnodes[@]}"; do rabbitmqctl -n "$r" stop >/dev/null 2>&1 || true; done
  rm -rf "$root"
}
trap cleanup EXIT

warren_start
rabbit_start
echo "== $n declares per phase, $conns connections in the parallel phase; $(nproc) cores"
for r in $(seq 1 "$rounds"); do
  echo "-- round $r"
  python3 bench/cluster-declares.py warren-3-nodes "$n" "$conns" 5771 5772 5773
  python3 bench/cluster-declares.py rabbitmq-3.10-3-nodes "$n" "$conns" 5681 5682 5683
done
