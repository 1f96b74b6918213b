#!/usr/bin/env bash
# Builds the Python package (maturin, from crates/etcd-dynamic-config-py and python/) into
# the test virtual environment .venv-etcd35, with pytest, installing maturin and pytest
# from PyPI when they are missing. Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-etcd35
scripts/ensure-etcd35.sh >/dev/null
if ! "$venv/bin/python" -c 'import pytest' >/dev/null 2>&1 || [ ! -x "$venv/bin/maturin" ]; then
  echo "Installing maturin and pytest (PyPI) into $venv ..." >&2
  if ! "$venv/bin/pip" install -q "maturin>=1.5,<2" "pytest>=7" >&2; then
    echo "error: could not install maturin and pytest into $venv; check that PyPI is reachable." >&2
    exit 1
  fi
fi
VIRTUAL_ENV="$(pwd)/$venv" "$venv/bin/maturin" develop --quiet >&2
echo "$(pwd)/$venv/bin/python"
