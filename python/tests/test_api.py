"""The Python API on a real etcd: the original's names and behaviour, and what the engine
adds (keys added after start, transactions whole, rejections, health, on_change)."""

import asyncio
import threading
import time

import pytest

import etcd_dynamic_config as edc
from conftest import wait_for


def run(coroutine):
    return asyncio.run(coroutine)


def started(config) -> edc.EtcdConfig:
    assert run(config.start()) is True, config.last_error
    return config


def test_control_unit_config_serves_typed_values_and_follows_etcd(etcd, env, prefix):
    revision = etcd.put_all(
        {
            f"{prefix}/CategorizationApiUrl": "http://api",
            f"{prefix}/AiHttpTimeoutSeconds": "2.5",
            f"{prefix}/AiHttpMaxConnections": "7",
            f"{prefix}/UseCache": "yes",
            f"{prefix}/AllowedStatuses": "new, done ,",
            f"{prefix}/LogLevel": "debug",
        }
    )
    config = started(edc.EtcdConfig())
    values = run(config.get_all_configs())
    assert values == {
        "categorization_api_url": "http://api",
        "ai_http_timeout_seconds": 2.5,
        "ai_http_max_connections": 7,
        "use_cache": True,
        "allowed_statuses": ("new", "done"),
        "log_level": "DEBUG",
    }
    assert config.start_report["source"] == "etcd"
    assert config.snapshot().revision == revision

    # A change, a key added after start, a deletion: each arrives, whole.
    etcd.put(f"{prefix}/AiHttpMaxConnections", "8")
    etcd.put(f"{prefix}/NewKey", "fresh")
    last = etcd.delete(f"{prefix}/UseCache")
    wait_for(lambda: config.snapshot().revision >= last, what="the delete")
    values = run(config.get_all_configs())
    assert values["ai_http_max_connections"] == 8
    assert values["new_key"] == "fresh"
    assert "use_cache" not in values
    # What is served at a revision is what etcd holds at it.
    etcd_revision, kvs = etcd.range(prefix + "/")
    snapshot = config.snapshot()
    assert snapshot.revision == etcd_revision
    assert len(snapshot.values) == len(kvs)
    run(config.stop())


def test_a_transaction_is_seen_whole_and_listeners_get_old_and_new(etcd, env, prefix):
    etcd.put_all({f"{prefix}/DbHost": "a", f"{prefix}/DbPort": "1"})
    config = started(edc.EtcdConfig())
    seen = []
    views = []

    def listener(change):
        seen.append(change)
        views.append(dict(config.snapshot().values))

    subscription = config.on_change(listener)
    revision = etcd.put_all({f"{prefix}/DbHost": "b", f"{prefix}/DbPort": "2"})
    wait_for(lambda: seen, what="the change")
    assert seen[0] == edc.ConfigChange(
        revision, {"db_host": ("a", "b"), "db_port": (1, 2)}
    )
    # Never half a transaction.
    assert views[0]["db_host"] == "b" and views[0]["db_port"] == 2
    subscription.cancel()
    etcd.put(f"{prefix}/DbHost", "c")
    time.sleep(0.3)
    assert len(seen) == 1, "a cancelled subscription hears nothing"
    run(config.stop())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_raising_or_slow_callback_stalls_nothing(etcd, env, prefix):
    etcd.put(f"{prefix}/Level", "1")
    config = started(edc.EtcdConfig())
    calls = []

    def raising(change):
        calls.append(change.revision)
        raise RuntimeError("a defect in the callback")

    release = threading.Event()

    def slow(change):
        release.wait(10)

    with config.on_change(raising), config.on_change(slow):
        etcd.put(f"{prefix}/Level", "2")
        last = etcd.put(f"{prefix}/Level", "3")
        # The slow callback holds its own thread only: values keep arriving.
        wait_for(lambda: run(config.get_all_configs())["level"] == "3", what="level 3")
        wait_for(lambda: last in calls, what="the raising callback, called again")
        release.set()
    run(config.stop())


def test_an_unparsable_value_is_rejected_and_the_last_good_one_stays(etcd, env, prefix):
    etcd.put(f"{prefix}/ServerPort", "8080")
    config = started(edc.EtcdConfig())
    last = etcd.put(f"{prefix}/ServerPort", "eighty")
    wait_for(lambda: config.snapshot().revision >= last, what="the revision")
    assert run(config.get_all_configs())["server_port"] == 8080
    (rejection,) = config.rejections()
    assert rejection["name"] == "server_port"
    assert "expected an integer" in rejection["reason"]
    assert "eighty" not in str(rejection), "never the value"
    health = config.health()
    assert health["invalid"][0]["name"] == "server_port"
    wait_for(lambda: config.health()["state"] == "synced", what="synced")
    run(config.stop())


class MyServiceClient(edc.BaseEtcdClient):
    """The original README's custom client, with a prefix of the test's own."""

    prefix = "/unset"

    def get_config_prefix(self) -> str:
        return self.prefix

    def _build_etcd_key_map(self):
        base = self.get_config_prefix()
        return {
            f"{base}/DatabaseUrl": "database_url",
            f"{base}/MaxWorkers": "max_workers",
            f"{base}/CacheTimeout": "cache_timeout",
        }

    def _build_env_var_map(self):
        return {"database_url": "MYAPP_DATABASE_URL", "max_workers": "MYAPP_MAX_WORKERS"}

    def _coerce_config_value(self, name, value):
        if name == "max_workers":
            return int(value) if value else 4
        return super()._coerce_config_value(name, value)


def test_a_custom_client_maps_keys_env_vars_and_coercion(etcd, env, prefix):
    MyServiceClient.prefix = prefix
    env.setenv("MYAPP_DATABASE_URL", "postgres://env")
    etcd.put(f"{prefix}/CacheTimeout", "1.5")
    etcd.put(f"{prefix}/Unmapped", "ignored")
    client = MyServiceClient()
    assert client.get_config() == {
        "database_url": "postgres://env",  # etcd lacks it: the env var
        "max_workers": 4,  # the hook's default for a missing value
        "cache_timeout": 1.5,  # super(): the built-in rules
    }
    assert client.get_etcd_key_map()[f"{prefix}/MaxWorkers"] == "max_workers"

    config = started(edc.EtcdConfig(client=MyServiceClient()))
    assert run(config.get_all_configs())["max_workers"] == 4
    last = etcd.put(f"{prefix}/MaxWorkers", "12")
    wait_for(lambda: run(config.get_all_configs())["max_workers"] == 12, what="12 workers")
    # A value the hook refuses keeps the last good one.
    last = etcd.put(f"{prefix}/MaxWorkers", "many")
    wait_for(lambda: config.snapshot().revision >= last, what="the revision")
    assert run(config.get_all_configs())["max_workers"] == 12
    run(config.stop())

    local = MyServiceClient(use_local_config=True)
    env.setenv("MYAPP_MAX_WORKERS", "3")
    assert local.get_config()["max_workers"] == 3
    assert local.get_config()["cache_timeout"] is None, "local mode reads no etcd value"


def test_get_values_by_keys_and_the_control_unit_key_map(etcd, env, prefix):
    etcd.put(f"{prefix}/LogLevel", "INFO")
    client = edc.EtcdClient()
    assert client.get_config_prefix() == prefix
    assert client.get_values_by_keys([f"{prefix}/LogLevel", f"{prefix}/Missing"]) == {
        f"{prefix}/LogLevel": "INFO",
        f"{prefix}/Missing": None,
    }
    assert client.get_control_unit_key_map() == {f"{prefix}/LogLevel": "log_level"}


def test_settings_are_read_as_the_original_reads_them_or_refused_in_plain_words(env, prefix):
    env.setenv("EtcdSettings__RootKey", prefix.lstrip("/"))
    assert edc.EtcdClient().get_config_prefix() == prefix, "a leading / is added"
    env.setenv("EtcdSettings__Dev", "TRUE")
    assert edc.EtcdClient().get_config_prefix() == "/dev" + prefix
    env.setenv("EtcdSettings__Dev", "1")
    with pytest.raises(edc.SettingError, match="EtcdSettings__Dev"):
        edc.EtcdClient().get_config_prefix()
    with pytest.raises(edc.SettingError, match="EtcdSettings__Dev"):
        run(edc.EtcdConfig().start())


def test_fallback_when_etcd_does_not_answer_and_errors_in_plain_words(env, etcd, prefix):
    from conftest import free_port

    env.setenv("EtcdSettings__HostName", f"http://127.0.0.1:{free_port()}")
    env.setenv("EtcdSettings__StartTimeout", "1s")
    env.setenv("LOG_LEVEL", "warn")
    config = started(edc.EtcdConfig())
    assert config.start_report["source"] == "fallback"
    assert run(config.get_all_configs()) == {"log_level": "WARN"}
    assert config.health()["state"] == "degraded"
    run(config.stop())

    env.setenv("EtcdSettings__FailFast", "true")
    config = edc.EtcdConfig()
    assert run(config.start()) is False
    assert isinstance(config.last_error, edc.UnavailableError)
    assert "did not answer within the start deadline" in str(config.last_error)


def test_blocking_waits_release_the_gil(env):
    from conftest import free_port

    env.setenv("EtcdSettings__HostName", f"http://127.0.0.1:{free_port()}")
    env.setenv("EtcdSettings__StartTimeout", "1s")
    env.setenv("EtcdSettings__FailFast", "true")
    counted = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counted.append(1)
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    config = edc.EtcdConfig()
    begun = time.monotonic()
    # The native start, called on this thread: it waits a second for etcd.
    with pytest.raises(edc.UnavailableError):
        config._engine().start()
    waited = time.monotonic() - begun
    stop.set()
    counter.join()
    assert waited >= 0.9
    # Holding the GIL for that second would have let the counter run about never.
    assert len(counted) > 100, len(counted)


def test_local_mode_reads_env_vars_only(env):
    env.setenv("USE_LOCAL_CONFIG", "true")
    env.setenv("CATEGORIZATION_API_URL", "http://localhost:8000")
    env.setenv("LOG_LEVEL", "debug")
    config = started(edc.EtcdConfig())
    assert run(config.get_all_configs()) == {
        "categorization_api_url": "http://localhost:8000",
        "log_level": "DEBUG",
    }
    assert config.health()["state"] == "local"
    env.setenv("USE_LOCAL_CONFIG", "sometimes")
    with pytest.raises(edc.SettingError, match="USE_LOCAL_CONFIG"):
        edc.EtcdClient().get_config()


def test_secrets_stay_out_of_repr_health_and_errors(etcd, env, prefix):
    env.setenv("EtcdSettings__Password", "hunter2-secret")
    env.setenv("EtcdSettings__UserName", "nobody")
    client = edc.EtcdClient()
    config = edc.EtcdConfig(client=client)
    run(config.start())  # this etcd has no auth: the credentials go unused
    texts = [repr(client), repr(config), str(config.last_error), str(config.health())]
    texts.append(str(client._settings().keys()))
    for text in texts:
        assert "hunter2-secret" not in text
    run(config.stop())


def test_the_interpreter_exits_cleanly_while_callbacks_run(etcd, prefix):
    import subprocess
    import sys

    import original

    etcd.put(f"{prefix}/Level", "0")
    code = """
import asyncio, time
import etcd_dynamic_config as edc
config = edc.EtcdConfig()
asyncio.run(config.start())
def slow(change):
    time.sleep(0.05)
config.on_change(slow)
print("ready", flush=True)
time.sleep(1.0)
"""
    settings = {"EtcdSettings__HostName": etcd.endpoint, "EtcdSettings__RootKey": prefix}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=original.environment(settings, use_original=False),
        cwd=original.NEUTRAL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "ready\n"
    # Changes keep arriving while the interpreter exits, without stop() or cancel().
    for i in range(200):
        etcd.put(f"{prefix}/Level", str(i))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
