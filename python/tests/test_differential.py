"""Both libraries on one etcd, name by name (value and Python type): every difference
must be a row of the table in the README; every row must hold."""

import re
import uuid
from pathlib import Path

import original

README = Path(__file__).resolve().parents[2] / "README.md"

# Values both libraries must serve alike: every kind the naming rules give, and the
# original's CamelCase conversions.
ALIKE = {
    "CategorizationApiUrl": "http://api:8000/v1",
    "PostgresDsn": "postgresql://u:p@db:5432/app",
    "AiHttpTimeoutSeconds": "2.5",
    "AiHttpMaxConnections": "10",
    "ServerPort": "8080",
    "DbPort": " 5432 ",
    "RetryCount": "3",
    "NegCount": "-3",
    "BatchSize": "500",
    "RateLimit": "100",
    "PoolMaxSize": "20",
    "UseCache": "true",
    "IsActive": "0",
    "IsOn": "TRUE",
    "HasFeature": "yes",
    "FeatureEnabled": "on",
    "SqlEcho": "off",
    "AutoStart": "1",
    "AllowedStatuses": "new, in_progress ,done",
    "HostList": "a,b",
    "MaxItems": "x,y",
    "RetryInterval": "0.5",
    "CacheDuration": "30",
    "ConnectTimeoutMs": "250",
    "AIHttpTimeout": "5",
    "LogSQLLevel": "WARNING",
    "PlainText": "  spaced  ",
    "Ratio": "1e3",
    "Greeting": "Grüße",
}


# Values the libraries serve differently: each must be explained by a row of the table.
DIFFERENT = {
    "LogLevel": "debug",
    "RequestTimeout": "soon",
    "WorkerCount": "many",
    "UseTls": "maybe",
    "ReadTimeoutSeconds": "inf",
    "EventCount": "99999999999999999999",
    "AnalysisMode": "fast",
    "Nested/Host": "h",
}


def differences() -> list:
    """The README's table: (key, value, original, ours) per row."""
    text = README.read_text()
    table = text.split("<!-- differences:start -->")[1].split("<!-- differences:end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(tuple(cells[:4]))
    assert len(rows) >= 10, rows
    return rows


def served(cell: str):
    """`name = repr` -> (name, repr); `absent` -> None."""
    if cell == "absent":
        return None
    match = re.fullmatch(r"`(\S+) = (.+)`", cell)
    assert match, f"a table cell that says nothing checkable: {cell!r}"
    return match.group(1), match.group(2)


def check(rows, original_values: dict, our_values: dict, what: str) -> None:
    """Applies each row (the original's cell to its values, ours to ours), then requires
    the rest to be equal."""
    theirs, ours = dict(original_values), dict(our_values)
    for key, _, their_cell, our_cell in rows:
        name = original.snake_name(key)
        for cell, values, who in ((their_cell, theirs, "original"), (our_cell, ours, "ours")):
            expected = served(cell)
            if expected is None:
                assert name not in values and original.path_name(key) not in values, (
                    f"{what}: {key}: {who} should not serve it: {values}"
                )
            else:
                name_served, text = expected
                assert name_served in values, f"{what}: {key}: {who} lacks {name_served}"
                assert values.pop(name_served)[1] == text, f"{what}: {key} ({who})"
    assert theirs == ours, f"{what}: differences not in the README's table: " + ", ".join(
        f"{name}: original {theirs.get(name)} ours {ours.get(name)}"
        for name in sorted(set(theirs) | set(ours))
        if theirs.get(name) != ours.get(name)
    )


def test_both_libraries_serve_alike_but_for_the_listed_differences(etcd):
    rows = differences()
    at_start = [row for row in rows if "after start" not in row[1] and row[0] != "`start()`"]
    after = [row for row in rows if "after start" in row[1]]
    (start_row,) = [row for row in rows if row[0] == "`start()`"]
    for key, value, _, _ in at_start:
        key = key.strip("`")
        assert key == "Empty" or DIFFERENT.get(key) == value.strip("`"), (key, value)
    keys = DIFFERENT

    # An empty value: the original's start() says False and it never watches.
    prefix = f"/diff/{uuid.uuid4().hex[:8]}"
    etcd.put_all({f"{prefix}/{key}": value for key, value in {**ALIKE, **keys}.items()})
    etcd.put(f"{prefix}/Empty", "")
    settings = {"EtcdSettings__HostName": etcd.endpoint, "EtcdSettings__RootKey": prefix}
    theirs = original.Serving(settings, use_original=True, settle=0)
    ours = original.Serving(settings, use_original=False, settle=0)
    assert (theirs.first["ok"], ours.first["ok"]) == (False, True), (start_row, theirs.first)
    empty_row = [row for row in at_start if row[0] == "`Empty`"]
    check(at_start, theirs.first["values"], ours.first["values"], "with an empty value")
    theirs.then(), ours.then()

    # Without it both watch: then keys are changed, added and deleted.
    prefix = f"/diff/{uuid.uuid4().hex[:8]}"
    etcd.put_all({f"{prefix}/{key}": value for key, value in {**ALIKE, **keys}.items()})
    settings["EtcdSettings__RootKey"] = prefix
    theirs = original.Serving(settings, use_original=True, settle=1.5)
    ours = original.Serving(settings, use_original=False, settle=1.5)
    assert (theirs.first["ok"], ours.first["ok"]) == (True, True)
    rows_now = [row for row in at_start if row not in empty_row]
    check(rows_now, theirs.first["values"], ours.first["values"], "at start")
    etcd.put(f"{prefix}/ServerPort", "9090")
    etcd.put(f"{prefix}/AddedLater", "new")
    etcd.delete(f"{prefix}/HostList")
    their_values, our_values = theirs.then()["values"], ours.then()["values"]
    assert their_values["server_port"] == our_values["server_port"] == ["int", "9090"]
    check(rows_now + after, their_values, our_values, "after changes")
