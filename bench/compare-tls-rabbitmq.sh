#!/usr/bin/env bash
# AMQPS 1->1 autoack and MQTTS QoS 0 throughput, Warren against RabbitMQ
# (Debian's rabbitmq-server, 3.10) over TLS, interleaved rounds.
# Usage: bench/compare-tls-rabbitmq.sh [rounds] [seconds] [target-dir]
# Makes a CA and an ECDSA P-256 server certificate for localhost (openssl
# CLI) in a temporary directory, starts one RabbitMQ node by hand
# (bench-tls@localhost, AMQP 127.0.0.1:5673, AMQPS :5674, MQTT :1887, MQTTS
# :8884, rabbitmq_mqtt enabled, otherwise default configuration) and one
# Warren (AMQPS :5681, MQTTS :8891, fresh data directory), then runs each
# scenario (open loop, then closed: at most 5,000 in flight) against each
# broker in turn, round after round, waiting for both brokers to be idle
# between rows. Stops only the
# processes it started, by PID (epmd too, if it was not running before).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
target=${3:-${CARGO_TARGET_DIR:-target}}
bench="$target/release/warren-bench"
warren="$target/release/warren"
[ -x "$bench" ] && [ -x "$warren" ] || cargo build --release -p warren -p warren-bench
work=$(mktemp -d)
pids=()
epmd_before=$(pgrep -x epmd || true)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -z "$epmd_before" ]; then
    for p in $(pgrep -x epmd || true); do kill "$p" 2>/dev/null || true; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Certificates: a CA and a server certificate for localhost / 127.0.0.1.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -days 2 -subj "/CN=bench CA" -out "$work/ca.pem"
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key.ec"
openssl pkcs8 -topk8 -nocrypt -in "$work/server.key.ec" -out "$work/server.key"
openssl req -new -key "$work/server.key" -subj "/CN=localhost" -out "$work/server.csr"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
chmod 644 "$work"/*

# RabbitMQ: one node, TLS listeners for AMQP and MQTT.
mkdir -p "$work/rmq"
cat >"$work/rmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:5673
listeners.ssl.default = 127.0.0.1:5674
ssl_options.cacertfile = $work/ca.pem
ssl_options.certfile = $work/server.pem
ssl_options.keyfile = $work/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
mqtt.listeners.tcp.default = 127.0.0.1:1887
mqtt.listeners.ssl.default = 127.0.0.1:8884
EOF
echo '[rabbitmq_mqtt].' >"$work/rmq/enabled_plugins"
HOME="$work/rmq" RABBITMQ_NODENAME=bench-tls@localhost RABBITMQ_NODE_PORT=5673 \
  RABBITMQ_DIST_PORT=25673 \
  RABBITMQ_CONFIG_FILE="$work/rmq/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$work/rmq/enabled_plugins" \
  RABBITMQ_MNESIA_BASE="$work/rmq/mnesia" RABBITMQ_LOG_BASE="$work/rmq/log" \
  RABBITMQ_PID_FILE="$work/rmq/rmq.pid" \
  /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rmq/stdout" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  grep -qs "Server startup complete" "$work/rmq/log/bench-tls@localhost.log" && break
  sleep 0.1
done
rmq_pid=$(cat "$work/rmq/rmq.pid")
echo "RabbitMQ beam pid $rmq_pid ($(grep -o 'RabbitMQ [0-9.]*' "$work/rmq/stdout" | head -1))"

# Warren: TLS listeners beside the plain ones, fresh data directory.
RUST_LOG=warn,warren=info WARREN_AMQP__BIND=127.0.0.1:5682 WARREN_AMQP__TLS_BIND=127.0.0.1:5681 \
  WARREN_MQTT__BIND=127.0.0.1:1892 WARREN_MQTT__TLS_BIND=127.0.0.1:8891 WARREN_MQTT__WS_BIND= \
  WARREN_MQTT__WSS_BIND=127.0.0.1:0 WARREN_HTTP__BIND=127.0.0.1:0 WARREN_HTTP__TLS_BIND=127.0.0.1:0 \
  WARREN_TLS__CERT_FILE="$work/server.pem" WARREN_TLS__KEY_FILE="$work/server.key" \
  WARREN_STORE__DIR="$work/warren-data" "$warren" 2>"$work/warren.log" &
wpid=$!
pids+=($wpid)
for _ in $(seq 1 100); do grep -q "MQTT TLS listener bound" "$work/warren.log" && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Wait (at most 120 s) until both brokers use under 5% CPU over a second:
# RabbitMQ keeps working through an open-loop backlog after the generator
# stops, which would load the next row.
settle() {
  local hz a b c d
  hz=$(getconf CLK_TCK)
  for _ in $(seq 1 120); do
    a=$(cpu_ticks "$wpid"); c=$(cpu_ticks "$rmq_pid"); sleep 1
    b=$(cpu_ticks "$wpid"); d=$(cpu_ticks "$rmq_pid")
    [ $(((b - a) * 100 / hz)) -lt 5 ] && [ $(((d - c) * 100 / hz)) -lt 5 ] && return
  done
  echo "(brokers still busy after 120 s)" >&2
}
run() { # file label pid addr args...
  local file=$1 label=$2 pid=$3 addr=$4
  shift 4
  "$bench" --addr "$addr" --tls-ca "$work/ca.pem" --pid "$pid" --label "$label" --seconds "$seconds" "$@" >"$work/out"
  [ -s "$work/$file" ] || head -n 2 "$work/out" >"$work/$file"
  tail -n 1 "$work/out" | tee -a "$work/$file"
  settle
}
settle
for r in $(seq 1 "$rounds"); do
  for loop in open closed; do
    run amqps "warren r$r" "$wpid" localhost:5681 --scenarios "1to1-autoack-$loop"
    run amqps "rabbitmq r$r" "$rmq_pid" localhost:5674 --scenarios "1to1-autoack-$loop"
    run mqtts "warren r$r" "$wpid" localhost:8891 --mqtt --scenarios "mqtt-qos0-$loop"
    run mqtts "rabbitmq r$r" "$rmq_pid" localhost:8884 --mqtt --scenarios "mqtt-qos0-$loop"
  done
done
echo
echo "AMQPS 1->1 autoack:"
cat "$work/amqps"
echo
echo "MQTTS QoS 0:"
cat "$work/mqtts"
