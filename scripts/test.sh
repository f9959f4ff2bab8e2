#!/usr/bin/env bash
# Builds everything and runs every test: the README's test command, and what
# CI runs. Needs a Rust toolchain, python3 with venv (the Python package is
# built into .venv, with its test tools from PyPI), and redis-server
# (installed below when missing); uses cargo-nextest when present (each test
# in its own process, with the timeouts in .config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster's tests of `ferroray start --head --storage` start a real
# redis-server (crates/ferroray-cluster/tests/support): install it, from
# Debian's packages, only when it is missing (CI runs this as root on a fresh
# Debian machine; elsewhere install it yourself, or run as root).
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (the cluster's storage tests need it)"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

echo "== build (all crates, examples, the benchmark)"
cargo build --workspace --all-targets --locked

echo "== doc tests"
cargo test --workspace --locked --doc

echo "== python package and tests"
./scripts/test-python.sh

# Last, so that the run closes on the test runner's summary.
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = "true" ] && profile=ci
  cargo nextest run --workspace --locked --profile "$profile"
else
  echo "cargo-nextest not found: running cargo test (tests of one binary run one at a time)"
  cargo test --workspace --locked --tests --examples
fi
