#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (each starting its own etcd
# members on free loopback ports), examples, benches in test mode, and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
