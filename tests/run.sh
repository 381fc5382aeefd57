#!/usr/bin/env bash
# Run every test: unit and end-to-end Rust tests (lapin against an in-process
# broker), then the Python suites (pika) against the real `warren` binary.
# Installs what it needs (Python clients) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing Python test clients"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

echo "== building"
cargo build --workspace --all-targets

echo "== cargo test"
cargo test --workspace -- --test-threads 2

echo "== pytest"
WARREN_BIN="$PWD/target/debug/warren" python3 -m pytest tests/python -q
