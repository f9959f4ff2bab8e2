#!/usr/bin/env bash
# Builds the Python package (crates/ferroray-python + python/ferroray) into a
# virtual environment of its own and runs the Python tests. Called by
# scripts/test.sh; needs python3 (3.9 or later, with venv) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$PWD/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
# Installs the extension module, built against Cargo.lock, as editable: the
# package's Python files are used from python/ferroray as they are.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --locked -q
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
