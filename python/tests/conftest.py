"""Fixtures: a throwaway etcd member on free loopback ports, and a small client for it.

The member is `$ETCD_BIN` (else `etcd` on PATH); a missing etcd fails the tests, it never
skips them. Writes go through etcd's JSON gateway (`/v3/kv/...`), which every etcd 3.4+
serves on its client port.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd:
    """One etcd member, and what a test needs to write to it."""

    def __init__(self, binary: str):
        self.binary = binary
        self.data = tempfile.mkdtemp(prefix="pytest-etcd-")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.process = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(os.path.join(self.data, "etcd.log"), "wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--name=py",
                f"--data-dir={self.data}/member",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=py={peer}",
                "--log-level=error",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"etcd exited; see {self.data}/etcd.log"
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as answer:
                    if json.load(answer).get("health") == "true":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"etcd at {self.endpoint} did not become healthy in 30 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self.log.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def _call(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.endpoint}/v3/{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def put(self, key: str, value: str) -> int:
        """Writes `key`; the revision etcd gave the write."""
        answer = self._call("kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def put_all(self, pairs: dict) -> int:
        """Writes every pair in one transaction; its revision."""
        success = [
            {"request_put": {"key": _b64(key), "value": _b64(value)}}
            for key, value in pairs.items()
        ]
        answer = self._call("kv/txn", {"success": success})
        return int(answer["header"]["revision"])

    def delete(self, key: str) -> int:
        answer = self._call("kv/deleterange", {"key": _b64(key)})
        return int(answer["header"]["revision"])

    def range(self, prefix: str) -> tuple:
        """`(revision, {key: value})` of the keys under `prefix`, as etcd holds them."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        answer = self._call("kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        kvs = {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in answer.get("kvs", [])
        }
        return int(answer["header"]["revision"]), kvs


def etcd_binary() -> str:
    binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
    if not binary:
        raise AssertionError(
            "no etcd: install it (apt-get install etcd-server) or set ETCD_BIN; "
            "scripts/test.sh does both"
        )
    return binary


@pytest.fixture(scope="session")
def etcd():
    member = Etcd(etcd_binary())
    member.start()
    yield member
    member.close()


@pytest.fixture
def prefix() -> str:
    """A prefix of the test's own."""
    return f"/pytest/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def env(monkeypatch, etcd, prefix):
    """The process environment of a ControlUnit service on the test's prefix."""
    for name in list(os.environ):
        if name.startswith("EtcdSettings__") or name == "USE_LOCAL_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("EtcdSettings__HostName", etcd.endpoint)
    monkeypatch.setenv("EtcdSettings__RootKey", prefix)
    return monkeypatch


def wait_for(condition, timeout: float = 10.0, what: str = "the condition"):
    """Polls `condition` until it returns a true value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)
