"""The original package, `etcd-dynamic-config==0.2.4` from PyPI, installed beside ours
(`pip install --target`) and run in a subprocess of its own: both import as
`etcd_dynamic_config`."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

VERSION = "0.2.4"
ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / ".venv-etcd35" / f"original-{VERSION}"
# Subprocesses run here: not in python/, whose etcd_dynamic_config would shadow both.
NEUTRAL = "/"


def install() -> Path:
    """Installs the original (and its dependencies) once; its directory."""
    marker = TARGET / f"etcd_dynamic_config-{VERSION}.dist-info"
    if not marker.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(TARGET),
                f"etcd-dynamic-config=={VERSION}",
            ],
            check=True,
            timeout=600,
        )
    return TARGET


def readme() -> str:
    """The original's README, as PyPI publishes it (the package's long description)."""
    metadata = install() / f"etcd_dynamic_config-{VERSION}.dist-info" / "METADATA"
    return metadata.read_text().split("\n\n", 1)[1]


def environment(settings: dict, use_original: bool) -> dict:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("EtcdSettings__") and name != "USE_LOCAL_CONFIG"
    }
    env.update(settings)
    if use_original:
        env["PYTHONPATH"] = str(install())
    else:
        env.pop("PYTHONPATH", None)
    return env


def run(code: str, settings: dict, use_original: bool, timeout: float = 60) -> str:
    """Runs `code` with the original (or ours) importable as `etcd_dynamic_config`."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment(settings, use_original),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=NEUTRAL,
    )
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


# Prints what `etcd_config` serves, each value as [type name, repr], after `start()`,
# then again after the writes the parent makes (it waits for a line on stdin).
SERVE = r"""
import asyncio, json, os, sys
from etcd_dynamic_config import etcd_config

def typed(values):
    return {name: [type(value).__name__, repr(value)] for name, value in values.items()}

async def main():
    ok = await etcd_config.start()
    print(json.dumps({"ok": ok, "values": typed(await etcd_config.get_all_configs())}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(float(sys.argv[1]))
    print(json.dumps({"values": typed(await etcd_config.get_all_configs())}), flush=True)
    # Not stop(): the original's joins a watcher thread that may wait on an idle HTTP
    # stream for ever.
    os._exit(0)

asyncio.run(main())
"""


class Serving:
    """`etcd_config` of one library in a subprocess: `first` after start, `then()` after
    the caller's writes."""

    def __init__(self, settings: dict, use_original: bool, settle: float):
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(settle)],
            env=environment(settings, use_original),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=NEUTRAL,
        )
        line = self.process.stdout.readline()
        if not line:
            self.process.kill()
            raise AssertionError(self.process.stderr.read())
        self.first = json.loads(line)

    def then(self) -> dict:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        out, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0:
            raise AssertionError(err)
        return json.loads(out)


def _snake(segment: str) -> str:
    first = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", segment)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", first).lower()


def snake_name(key: str) -> str:
    """The name the original gives a key: its last segment in snake_case."""
    return _snake(key.strip("`").split("/")[-1])


def path_name(key: str) -> str:
    """The name this package gives a key: each segment in snake_case, joined by `.`."""
    return ".".join(_snake(segment) for segment in key.strip("`").split("/"))
