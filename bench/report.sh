#!/usr/bin/env bash
# Runs every benchmark and writes its figures into BENCHMARKS.md, between the
# `<!-- begin: NAME -->` / `<!-- end: NAME -->` markers: no figure there is copied by
# hand. Takes about twenty minutes on 2 cores.
#
#   bench/report.sh                 # in-process, end-to-end (etcd 3.4), CLI at scale (etcd 3.5)
#   E2E_COLD=1000,10000 bench/report.sh   # other cold-start sizes (default: up to 1M keys)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh >&2
work=target/bench-report   # each bench's own output, kept for reading
mkdir -p "$work"

echo "in process (criterion) ..." >&2
cargo bench -q -p etcd-dynamic-config --bench snapshot -- --noplot >"$work/snapshot.log" 2>&1
echo "end to end ..." >&2
E2E_COLD=${E2E_COLD:-1000,10000,100000,1000000} \
  cargo bench -q -p etcd-dynamic-config --bench e2e >"$work/e2e.log" 2>&1
echo "the CLI at scale ..." >&2
bench/cli-at-scale.sh >"$work/cli.log" 2>&1
echo "the Python package against the original ..." >&2
scripts/ensure-pytest.sh >/dev/null
VIRTUAL_ENV="$(pwd)/.venv-etcd35" .venv-etcd35/bin/maturin develop --quiet --release >&2
.venv-etcd35/bin/python python/bench.py >"$work/python.log" 2>&1

python3 - "$work" <<'EOF'
import json, os, platform, re, subprocess, sys, datetime
work = sys.argv[1]

def estimate(group, name, statistic="median"):
    path = f"target/criterion/{group}/{name}/new/estimates.json"
    with open(path) as f:
        return json.load(f)[statistic]["point_estimate"]

def ns(value):
    return f"{value:.1f} ns" if value < 1000 else f"{value / 1000:.2f} µs" if value < 1e6 else f"{value / 1e6:.2f} ms"

rows = []
def row(what, target, measured, met):
    rows.append(f"| {what} | {target} | {measured} | {met} |")

for n in (1000, 100000):
    get = estimate("read", f"snapshot_get/{n}")
    row(f"`config.snapshot().get(name)`, one name, {n:,} names", "≤ 50 ns", ns(get), "yes" if get <= 50 else "**no**")
for n in (1000, 100000):
    get = estimate("read", f"cached_get/{n}")
    row(f"the same through a thread's own handle (`config.cached()`, then `load().get(name)`), {n:,} names", "≤ 50 ns", ns(get), "yes" if get <= 50 else "**no**")
for n in (1000, 100000):
    ours, bare = estimate("read", f"snapshot_get_scattered/{n}"), estimate("read", f"bare_arc_swap_hashmap/{n}")
    ratio = ours / bare
    row(f"`snapshot().get`, names in a scattered order, {n:,} names, vs an `arc-swap` load and a `HashMap` lookup of the same names",
        "≤ 2× bare", f"{ns(ours)} vs {ns(bare)}: {ratio:.2f}×", "yes" if ratio <= 2 else "**no**")
for n in (1000, 100000):
    ours, bare = estimate("read", f"snapshot_get_scattered_overlaid/{n}"), estimate("read", f"bare_arc_swap_hashmap/{n}")
    ratio = ours / bare
    row(f"the same, with as many changes since the last full read as the overlay holds before a merge ({n // 16 + 64:,}), {n:,} names",
        "≤ 2× bare", f"{ns(ours)} vs {ns(bare)}: {ratio:.2f}×", "yes" if ratio <= 2 else "**no**")
load, guard = estimate("read", "binding_load"), estimate("read", "bare_arc_swap_guard")
row("typed struct `binding.load()` (a borrow), beside the `arc-swap` guard load it is built on", "≤ 20 ns",
    f"{ns(load)} (guard alone {ns(guard)}: {load / guard:.2f}×)", "yes" if load <= 20 else "**no**")
row("typed struct `binding.load_full()` (an `Arc` to keep)", "(reported)", ns(estimate("read", "binding_load_full")), "-")
cached = estimate("read", "binding_cached_load")
row("typed struct, a thread's own handle (`binding.cached()`): `load()`", "≤ 20 ns", ns(cached), "yes" if cached <= 20 else "**no**")
for n in (1000, 100000):
    put = estimate("update", f"one_put/{n}")
    row(f"apply one put and publish, {n:,} names", "≤ 50 µs, no O(n) copy", ns(put), "yes" if put <= 50_000 else "**no**")
for n in (1000, 100000):
    put = estimate("update", f"one_put_each_name/{n}", "mean")
    row(f"apply one put and publish, a different name each time, {n:,} names: the mean, merges of the overlay included",
        "≤ 50 µs, amortized", ns(put), "yes" if put <= 50_000 else "**no**")
for n in (1000, 100000):
    row(f"apply a 10-key transaction, {n:,} names", "(reported)", ns(estimate("update", f"txn_10_keys/{n}")), "-")
    row(f"copy of the whole map (what an O(n) design pays per update), {n:,} names", "(comparison)", ns(estimate("update", f"copy_whole_map/{n}")), "-")
row("build the first snapshot of 10,000 keys", "(reported)", ns(estimate("list", "build_10000")), "-")
row("a typed binding's first `load()` after a publish: 100,000 names read as a `BTreeMap` of `BTreeMap`s", "(reported)", ns(estimate("bind", "read_whole_as_type_100000")), "-")
row("the same, the first after a full read or a merge (the names' order sorted first)", "(reported)", ns(estimate("bind", "read_whole_as_type_100000_sorting")), "-")
snapshot = "| what | target | measured (median) | met |\n| --- | --- | --- | --- |\n" + "\n".join(rows)

def table(log):
    lines = open(os.path.join(work, log)).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    return "\n".join(line for line in lines[start:] if line.startswith("|"))

def etcd_version():
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else "unknown"
    return "etcd " + first.split(":", 1)[-1].strip()

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
header = (f"Generated by `bench/report.sh` on {datetime.date.today().isoformat()} at commit {commit}: "
          f"{os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.0f} GiB, {etcd_version()} for the "
          "in-process and end-to-end rows (Debian), etcd 3.5.1 for the CLI rows; release builds. "
          "The machine is shared and noisy: compare the ratios, measured side by side in one run, "
          "more than the absolute times.")

parts = {
    "header": header,
    "snapshot": snapshot,
    "e2e": table("e2e.log"),
    "cli": table("cli.log"),
    "python": table("python.log"),
}
text = open("BENCHMARKS.md").read()
for name, body in parts.items():
    pattern = re.compile(rf"(<!-- begin: {name} -->\n).*?(\n<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"BENCHMARKS.md has no <!-- begin: {name} --> ... <!-- end: {name} --> markers")
    text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
open("BENCHMARKS.md", "w").write(text)
print("BENCHMARKS.md written", file=sys.stderr)
EOF
