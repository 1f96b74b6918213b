"""`EtcdConfig`: the configuration of one prefix, loaded once and kept current."""

import asyncio
import json
import logging
import threading
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from . import _native
from ._client import BaseEtcdClient, ControlUnitEtcdClient

logger = logging.getLogger("etcd_dynamic_config")


class Snapshot(NamedTuple):
    """Every value at one etcd revision."""

    revision: int
    values: Dict[str, object]


class ConfigChange(NamedTuple):
    """The names one etcd revision changed: name -> (old, new); `None` for no value."""

    revision: int
    changes: Dict[str, Tuple[object, object]]


class Subscription:
    """A registered `on_change` callback: it stays registered until `cancel()` (or the
    end of a `with` block), whether or not the subscription is kept."""

    def __init__(self, native, registry: set):
        self._native = native
        self._registry = registry
        registry.add(self)

    def cancel(self) -> None:
        self._native.cancel()
        self._registry.discard(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


class EtcdConfig:
    """The configuration of one etcd prefix, served from memory.

    `start()` reads the prefix at one revision and watches it from the next; the engine
    resumes after outages, re-reads after compaction, and applies a transaction whole.
    When etcd does not answer within `EtcdSettings__StartTimeout` (5 s), the cache file,
    env vars and defaults serve until it does. Reads never touch the network.
    """

    def __init__(self, client: Optional[BaseEtcdClient] = None) -> None:
        self._client = client if client is not None else ControlUnitEtcdClient()
        self._native = None
        self._started = False
        self._lock = threading.RLock()
        self._cache: Dict[str, object] = {}
        self._revision = 0
        self._logger = logger
        self._subscriptions: set = set()
        self.start_report: Optional[dict] = None
        self.last_error: Optional[Exception] = None

    def __repr__(self) -> str:
        return f"EtcdConfig(client={self._client!r}, started={self._started})"

    def _engine(self):
        with self._lock:
            if self._native is None:
                self._native = _native.Config(self._client._native_args())
            return self._native

    async def start(self) -> bool:
        """Loads the prefix and starts watching it. `True` when values are served (from
        etcd, or, while it does not answer, the cache file, env vars and defaults);
        `False` when the start failed (`last_error` says why, and it is logged).

        Raises `SettingError` for malformed settings.
        """
        engine = self._engine()
        if self._started:
            return True
        loop = asyncio.get_running_loop()
        try:
            report = await loop.run_in_executor(None, engine.start)
        except _native.EtcdConfigError as error:
            self.last_error = error
            self._logger.error("etcd_config_start_failed: %s", error)
            return False
        self.start_report = json.loads(report)
        self._started = True
        return True

    async def stop(self) -> None:
        """Stops watching; the last values keep serving. `start()` may be called again."""
        if self._native is not None and self._started:
            self._started = False
            await asyncio.get_running_loop().run_in_executor(None, self._native.stop)

    async def get_all_configs(self) -> dict:
        """Every name with its value (a copy). Before the first `start()`, etcd is read
        once, as the original did."""
        if self.start_report is None:
            loop = asyncio.get_running_loop()
            values = await loop.run_in_executor(None, self._client.get_config, {})
            with self._lock:
                if not self._cache:
                    self._cache = dict(values)
                return dict(self._cache)
        return self._values()

    def get_all_configs_sync(self) -> dict:
        """As `get_all_configs`, for code without an event loop (after `start()`)."""
        return self._values()

    def _values(self) -> dict:
        with self._lock:
            changed = self._engine().values_if_changed()
            if changed is not None:
                self._revision, values = changed
                self._cache = self._served(values)
            return dict(self._cache)

    def _served(self, values: Dict[str, object]) -> Dict[str, object]:
        """What the engine serves, through the client's own coercion hook if it has one."""
        if not self._client._has_own_coercion():
            return values
        last_good = self._cache
        return {
            name: self._client._coerced(name, values.get(name), last_good)
            for name in self._client._names(values)
        }

    def snapshot(self) -> Snapshot:
        """Every value at one revision (after `start()`)."""
        with self._lock:
            values = self._values()
            return Snapshot(self._revision, values)

    def health(self) -> dict:
        """The health report: `state` (`synced`, `degraded`, ...), `reason`, revisions,
        connection; never a value."""
        return json.loads(self._engine().health())

    def rejections(self) -> list:
        """The values rejected now: name, source and reason, never the value."""
        return json.loads(self._engine().rejections())

    def on_change(self, callback: Callable[[ConfigChange], None]) -> Subscription:
        """Calls `callback(change)` after every revision that changed a value, in
        revision order, on a thread of its own: a slow or raising callback delays only
        itself. It stays registered until the returned `Subscription` is cancelled."""
        client = self._client

        def deliver(revision, changes):
            if client._has_own_coercion():
                changes = [
                    (name, client._coerced(name, old, {}), client._coerced(name, new, {}))
                    for name, old, new in changes
                ]
            callback(ConfigChange(revision, {name: (old, new) for name, old, new in changes}))

        return Subscription(self._engine().on_change(deliver), self._subscriptions)
