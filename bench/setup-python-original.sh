#!/usr/bin/env bash
# Prints the path of a Python with the original etcd-dynamic-config 0.2.4 installed in
# a throwaway virtual environment (.venv-python-original), creating it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-python-original
if ! "$venv/bin/python" -c 'import etcd_dynamic_config' >/dev/null 2>&1; then
  echo "Installing etcd-dynamic-config==0.2.4 into $venv ..." >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "etcd-dynamic-config==0.2.4" >&2
fi
echo "$(pwd)/$venv/bin/python"
