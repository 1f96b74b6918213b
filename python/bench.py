"""This package against the original (etcd-dynamic-config 0.2.4) on one throwaway etcd, in
one run: `get_all_configs()` per call, put -> visible, and cold start at 1,000 and 10,000
keys. Prints each figure and the ratio original / ours (above 1: ours is faster).

    scripts/ensure-pytest.sh          # builds the package into .venv-etcd35 (debug)
    .venv-etcd35/bin/maturin develop --release   # the figures are for a release build
    .venv-etcd35/bin/python python/bench.py

Each library runs in a process of its own, alternately, on the same etcd and keys.
"""

import json
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).with_name("tests")))

import original  # noqa: E402
from conftest import Etcd, etcd_binary  # noqa: E402

MEASURE = r"""
import asyncio, base64, json, os, sys, time, urllib.request
from etcd_dynamic_config import etcd_config

endpoint, prefix, what = sys.argv[1], sys.argv[2], sys.argv[3]

def put(key, value):
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    request = urllib.request.Request(endpoint + "/v3/kv/put", data=body,
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()

async def main():
    began = time.perf_counter()
    ok = await etcd_config.start()
    result = {"ok": ok, "start_s": time.perf_counter() - began}
    if what == "reads":
        calls = 2000
        began = time.perf_counter()
        for _ in range(calls):
            await etcd_config.get_all_configs()
        result["call_us"] = (time.perf_counter() - began) / calls * 1e6
    if what == "updates":
        latencies = []
        for i in range(40):
            value = f"v{i}-{time.time()}"
            began = time.perf_counter()
            put(prefix + "/Key00001", value)
            deadline = began + 10
            while (await etcd_config.get_all_configs()).get("key00001") != value:
                if time.perf_counter() > deadline:
                    raise SystemExit("an update did not arrive in 10 s")
                await asyncio.sleep(0)
            latencies.append(time.perf_counter() - began)
        result["visible_ms"] = sorted(latencies)[len(latencies) // 2] * 1e3
    print(json.dumps(result), flush=True)
    # Not stop(): the original's joins a watcher thread that may wait on an idle HTTP
    # stream for ever.
    os._exit(0)

asyncio.run(main())
"""


def measure(etcd: Etcd, prefix: str, what: str, use_original: bool) -> dict:
    settings = {"EtcdSettings__HostName": etcd.endpoint, "EtcdSettings__RootKey": prefix}
    code = MEASURE.replace("sys.argv[1], sys.argv[2], sys.argv[3]", repr((etcd.endpoint, prefix, what)))
    out = original.run(code, settings, use_original, timeout=900)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], result
    return result


def fill(etcd: Etcd, count: int) -> str:
    prefix = f"/bench/{uuid.uuid4().hex[:8]}"
    for start in range(0, count, 100):
        etcd.put_all(
            {f"{prefix}/Key{i:05}": f"value-{i}" for i in range(start, min(start + 100, count))}
        )
    return prefix


def compare(label: str, unit: str, theirs: list, ours: list) -> str:
    t, o = statistics.median(theirs), statistics.median(ours)
    return f"| {label} | {t:.3g} {unit} | {o:.3g} {unit} | {t / o:.1f}× |"


def main() -> None:
    etcd = Etcd(etcd_binary())
    etcd.start()
    rows = []
    try:
        prefix = fill(etcd, 1_000)
        runs = {True: [], False: []}
        for _ in range(3):
            for use_original in (True, False):
                runs[use_original].append(measure(etcd, prefix, "reads", use_original))
        rows.append(compare(
            "`get_all_configs()`, 1,000 keys", "µs",
            [r["call_us"] for r in runs[True]], [r["call_us"] for r in runs[False]],
        ))
        rows.append(compare(
            "cold start, 1,000 keys", "s",
            [r["start_s"] for r in runs[True]], [r["start_s"] for r in runs[False]],
        ))
        runs = {True: [], False: []}
        for _ in range(2):
            for use_original in (True, False):
                runs[use_original].append(measure(etcd, prefix, "updates", use_original))
        rows.append(compare(
            "put → visible (median of 40)", "ms",
            [r["visible_ms"] for r in runs[True]], [r["visible_ms"] for r in runs[False]],
        ))
        prefix = fill(etcd, 10_000)
        runs = {True: [], False: []}
        for use_original in (True, False):
            runs[use_original].append(measure(etcd, prefix, "start", use_original))
        rows.append(compare(
            "cold start, 10,000 keys", "s",
            [r["start_s"] for r in runs[True]], [r["start_s"] for r in runs[False]],
        ))
    finally:
        etcd.close()
    print("| measure | original 0.2.4 | this package | original / ours |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
