#!/usr/bin/env bash
# The demo: starts a throwaway etcd, loads a configuration, shows live updates arriving,
# and shows the configuration still serving when etcd stops.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo run --quiet -p etcd-dynamic-config --example demo
