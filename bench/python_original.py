"""Drives the Python original (etcd-dynamic-config 0.2.4) against the same etcd as the
Rust end-to-end bench, and prints its figures as one JSON line.

usage: python_original.py ENDPOINT PREFIX_1K PREFIX_10K SMALL_PREFIX PUTS
"""

import asyncio
import json
import os
import logging
import statistics
import sys
import time

logging.disable(logging.CRITICAL)

from etcd3 import Client  # noqa: E402  (etcd3-py, a dependency of the original)
from etcd_dynamic_config import BaseEtcdClient, EtcdConfig  # noqa: E402


async def cold_start(endpoint, prefix):
    config = EtcdConfig(client=BaseEtcdClient(endpoint=endpoint, root_key=prefix))
    started = time.perf_counter()
    ok = await config.start()
    elapsed = time.perf_counter() - started
    loaded = len(await config.get_all_configs())
    # Not stopped: the original's stop() waits for a watcher thread blocked in a read.
    return {"ok": ok, "seconds": elapsed, "loaded": loaded}


async def read_and_latency(endpoint, prefix, puts):
    config = EtcdConfig(client=BaseEtcdClient(endpoint=endpoint, root_key=prefix))
    await config.start()
    calls = 20000
    started = time.perf_counter()
    for _ in range(calls):
        await config.get_all_configs()
    read_ns = (time.perf_counter() - started) / calls * 1e9

    host, port = endpoint.split("://")[1].split(":")
    raw = Client(host, int(port))
    latencies = []
    for i in range(puts):
        value = f"latency-{i}"
        started = time.perf_counter()
        raw.put(f"{prefix}/LatencyProbe", value)
        deadline = started + 2
        while time.perf_counter() < deadline:
            configs = await config.get_all_configs()
            if configs.get("latency_probe") == value:
                latencies.append(time.perf_counter() - started)
                break
            await asyncio.sleep(0.0001)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
    return {
        "get_all_configs_ns": read_ns,
        "latency_p50_s": p(0.50),
        "latency_p99_s": p(0.99),
        "latency_seen": len(latencies),
        "latency_puts": puts,
    }


async def main():
    endpoint, prefix_1k, prefix_10k, small_prefix, puts = sys.argv[1:6]
    result = {
        "cold_1k": await cold_start(endpoint, prefix_1k),
        "cold_10k": await cold_start(endpoint, prefix_10k),
    }
    result.update(await read_and_latency(endpoint, small_prefix, int(puts)))
    print(json.dumps(result), flush=True)


asyncio.run(main())
# The original's watcher threads are not daemons and block in reads: leave at once.
os._exit(0)
