#!/usr/bin/env bash
# The CLI at scale against etcdctl, side by side: time and peak memory (max RSS) of
# `etcdctl get --prefix` and of `dump` (table, json) and `export` over the same prefix,
# in interleaved rounds, on a throwaway etcd 3.5 (the one scripts/ensure-etcd35.sh
# installs, with its etcdctl). Prints a Markdown table of medians and ratios.
#
#   bench/cli-at-scale.sh [KEYS] [ROUNDS]      # default 100000 keys, 5 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-100000}
rounds=${2:-5}

etcd=$(scripts/ensure-etcd35.sh)
etcdctl="$(dirname "$etcd")/etcdctl"
cargo build --release -q -p etcd-dynamic-config-cli
cli=target/release/etcd-dynamic-config

dir=$(mktemp -d)
cleanup() {
  if [ -n "${etcd_pid:-}" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
read -r client peer < <(python3 -c '
import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
endpoint="http://127.0.0.1:$client"
"$etcd" --data-dir "$dir/data" --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "default=http://127.0.0.1:$peer" --quota-backend-bytes 8589934592 \
  >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do
  "$etcdctl" --endpoints "$endpoint" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

python3 -c "
for i in range($keys):
    print(f'SERVICE{i % 500:03d}__KEY{i:06d}=value-{i}')" >"$dir/seed.env"
EtcdSettings__HostName=$endpoint "$cli" --prefix /scale import --batch 128 "$dir/seed.env" >/dev/null

python3 - "$rounds" "$keys" "$endpoint" "$etcdctl" "$cli" <<'EOF'
import os, statistics, subprocess, sys, time
rounds, keys, endpoint, etcdctl, cli = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
env = dict(os.environ, EtcdSettings__HostName=endpoint, ETCDCTL_API="3")
commands = {
    "etcdctl get --prefix": [etcdctl, "--endpoints", endpoint, "get", "--prefix", "/scale/"],
    "dump (table)": [cli, "--prefix", "/scale", "dump"],
    "dump --format json": [cli, "--prefix", "/scale", "dump", "--format", "json"],
    "export": [cli, "--prefix", "/scale", "export"],
}
runs = {name: [] for name in commands}
for _ in range(rounds):
    for name, argv in commands.items():
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        assert status == 0, f"{name} failed"
        runs[name].append((time.perf_counter() - started, usage.ru_maxrss / 1024))
base = runs["etcdctl get --prefix"]
base_t = statistics.median(t for t, _ in base)
base_m = statistics.median(m for _, m in base)
print(f"\n{keys} keys, {rounds} interleaved rounds, medians (range)\n")
print("| command | time | peak RSS | time ratio | memory ratio |")
print("| --- | --- | --- | --- | --- |")
for name, samples in runs.items():
    times = [t for t, _ in samples]
    mems = [m for _, m in samples]
    t, m = statistics.median(times), statistics.median(mems)
    print(f"| `{name}` | {t*1000:.0f} ms ({min(times)*1000:.0f}–{max(times)*1000:.0f}) "
          f"| {m:.1f} MiB ({min(mems):.1f}–{max(mems):.1f}) | {t/base_t:.2f}× | {m/base_m:.2f}× |")
EOF
