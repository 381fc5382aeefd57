#!/usr/bin/env bash
# Run every test: unit and end-to-end Rust tests (lapin against an in-process
# broker), then the Python suites (pika) against the real `warren` binary.
# Installs what it needs (Python clients) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test clients (pika, paho-mqtt, prometheus-client, mosquitto-clients, chromium, openssl, MQTT.js)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
missing=()
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
# Headless Chromium renders the management web page in test_operator.py.
command -v chromium >/dev/null || missing+=(chromium)
# The TLS tests check protocol versions with openssl s_client.
command -v openssl >/dev/null || missing+=(openssl)
# npm installs MQTT.js, which the browser test loads in Chromium.
command -v npm >/dev/null || missing+=(npm)
# Cluster partition tests put nodes in network namespaces (ip netns, veth, bridges).
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
fi
# Pinned by tests/browser/package-lock.json; no browser download (Chromium comes from apt).
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== building"
cargo build --workspace --all-targets

echo "== cargo test"
cargo test --workspace -- --test-threads 2

echo "== pytest"
WARREN_BIN="$PWD/target/debug/warren" WARRENCTL_BIN="$PWD/target/debug/warrenctl" \
  python3 -m pytest tests/python -q
