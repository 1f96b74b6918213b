"""Every Python example of the original's README, run as written with this package
against a real etcd: the nine of the project's README (kept verbatim in
`original_readme_examples.md`), and the two of the README PyPI publishes with 0.2.4.

The README uses `Dict` in annotations without importing it, so three examples raise
`NameError` as written, with either package; each example runs after
`from typing import Dict`, as its author meant.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import original

CONTROL_UNIT = {
    "CategorizationApiUrl": "http://categorize:8000",
    "CategorizationApiToken": "tok-0123456789abcdef",
    "PostgresDsn": "postgresql://app:pw@db:5432/app",
    "LogLevel": "INFO",
    "AiHttpTimeoutSeconds": "12.5",
    "AiHttpMaxConnections": "32",
}

# What each example prints, in order of the README (None: nothing to check but a clean
# exit).
EXPECTED = [
    ["Database URL: postgresql://app:pw@db:5432/app", "API URL: http://categorize:8000"],
    ["Available config keys:", "'log_level'", "Log level: INFO"],
    ["Database URL: postgres://from-env"],
    ["Using API token: tok-012345..."],
    None,
    None,
    None,
    None,
    None,
]


EXAMPLES = Path(__file__).with_name("original_readme_examples.md")
# Where the project's guide keeps the original README; when it is there, the copy above
# must be the same.
SEED = Path(__file__).resolve().parents[3] / "shared/seed/python-etcd-dynamic-config-README.md"


def blocks(markdown: str) -> list:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def examples() -> list:
    found = blocks(EXAMPLES.read_text())
    assert len(found) == len(EXPECTED), f"{len(found)} examples"
    if SEED.exists():
        assert blocks(SEED.read_text()) == found, "the copy differs from the original README"
    return found


@pytest.fixture(scope="module")
def control_unit(etcd):
    etcd.put_all({f"/APPS/ControlUnit/{key}": value for key, value in CONTROL_UNIT.items()})
    return etcd


def run_example(etcd, code: str, index: int) -> str:
    """Runs `code` with this package; its output. An endless example must still be
    running after 3 s, without a traceback."""
    env = original.environment(
        {
            "EtcdSettings__HostName": etcd.endpoint,
            "MYAPP_DATABASE_URL": "postgres://from-env",
        },
        use_original=False,
    )
    endless = "while True" in code
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=original.NEUTRAL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=3 if endless else 60)
        assert not endless, "the worker loop ended"
        assert process.returncode == 0, f"example {index + 1}:\n{code}\n{err}"
    except subprocess.TimeoutExpired:
        assert endless, f"example {index + 1} hung:\n{code}"
        process.kill()
        out, err = process.communicate()
        assert "Traceback" not in err, err
    return out


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_the_original_readme_example_runs_as_written(control_unit, index):
    code = "from typing import Dict\n" + examples()[index]
    out = run_example(control_unit, code, index)
    expected = EXPECTED[index] or []
    position = 0
    for line in expected:
        found = out.find(line, position)
        assert found >= 0, f"example {index + 1}: {line!r} not in\n{out}"
        position = found + len(line)


# What the examples of the README on PyPI hold once run (checked after them).
PYPI_CHECKS = [
    "assert (api_url, db_dsn) == ('http://categorize:8000', 'postgresql://app:pw@db:5432/app')",
    "",  # the second keeps its values inside main()
]


@pytest.mark.parametrize("index", [0, 1])
def test_the_examples_of_the_readme_on_pypi_run_as_written(control_unit, index):
    found = blocks(original.readme())
    assert len(found) == 2, f"{len(found)} examples in the README on PyPI"
    # Its first example uses `os` without importing it.
    code = "import os\n" + found[index] + "\n" + PYPI_CHECKS[index] + "\n"
    run_example(control_unit, code, index)
