#!/usr/bin/env bash
# Run every test: unit and end-to-end Rust tests (lapin against an in-process
# broker), then the Python suites (pika) against the real `warren` binary.
# Installs what it needs (Python clients) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test clients (pika, paho-mqtt, prometheus-client, mosquitto-clients, chromium)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
missing=()
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
# Headless Chromium renders the management web page in test_operator.py.
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
fi

echo "== building"
cargo build --workspace --all-targets

echo "== cargo test"
cargo test --workspace -- --test-threads 2

echo "== pytest"
WARREN_BIN="$PWD/target/debug/warren" WARRENCTL_BIN="$PWD/target/debug/warrenctl" \
  python3 -m pytest tests/python -q
