"""The clients: `BaseEtcdClient`, `ControlUnitEtcdClient` (alias `EtcdClient`)."""

import logging
import os
from typing import Dict, Iterable, Optional

from . import _native

logger = logging.getLogger("etcd_dynamic_config")

# The variables the original reads, and the ones this engine adds.
HOST_NAME = "EtcdSettings__HostName"
USER_NAME = "EtcdSettings__UserName"
PASSWORD = "EtcdSettings__Password"
ROOT_KEY = "EtcdSettings__RootKey"
CA_CERT_PATH = "EtcdSettings__CaCertPath"
USE_LOCAL_CONFIG = "USE_LOCAL_CONFIG"


class BaseEtcdClient:
    """A client for one etcd prefix, customised by overriding its hooks.

    Override `get_config_prefix()` for the prefix, `_build_etcd_key_map()` for the keys
    to read (absolute etcd key -> name; empty: every key under the prefix, named by its
    path in snake_case), `_build_env_var_map()` for each name's environment variable
    (read when etcd does not hold the name, and in local mode), and
    `_coerce_config_value(name, value)` for your own types; `super()` applies the
    built-in naming rules.

    Nothing is contacted when the client is made: the settings are read, and checked,
    on first use.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        root_key: Optional[str] = None,
        ca_cert_path: Optional[str] = None,
        use_snake_case: bool = True,
        auto_discover_keys: bool = True,
        use_local_config: Optional[bool] = None,
    ):
        if not use_snake_case:
            raise ValueError(
                "use_snake_case=False is not supported: names are the keys' path in snake_case"
            )
        self._endpoint = endpoint or os.getenv(HOST_NAME)
        self._username = username or os.getenv(USER_NAME)
        self._password = password or os.getenv(PASSWORD)
        self._root_key = root_key or os.getenv(ROOT_KEY)
        self._ca_pem_path = ca_cert_path or os.getenv(CA_CERT_PATH)
        self._use_snake_case = use_snake_case
        self._auto_discover_keys = auto_discover_keys
        self._use_local_config = use_local_config
        self._logger = logger
        self._etcd_key_map = dict(self._build_etcd_key_map() or {})
        self._env_var_map = dict(self._build_env_var_map() or {})
        self._native_client = None

    def __repr__(self) -> str:
        # Never the password.
        return f"{type(self).__name__}(endpoint={self._endpoint!r}, prefix={self.get_config_prefix()!r})"

    # --- hooks -------------------------------------------------------------------------

    def get_config_prefix(self) -> str:
        """The etcd prefix of this configuration, e.g. `/APPS/MyService`."""
        return self._root_key or ""

    def _build_etcd_key_map(self) -> Dict[str, str]:
        """Absolute etcd key -> name; empty: every key under the prefix."""
        return {}

    def _build_env_var_map(self) -> Dict[str, str]:
        """Name -> environment variable, read when etcd does not hold the name."""
        return {}

    def _coerce_config_value(self, internal_name: str, value: object) -> object:
        """The built-in rules: `use_*`, `is_*`, `has_*`, `*_enabled`, `*_debug`, `*_echo`,
        `*_start` -> bool; `*_statuses`, `*_list`, `*_items` -> tuple; `*_timeout*`,
        `*_seconds`, `*_interval`, `*_duration` -> float; `*_count`, `*_max_*`,
        `*_min_*`, `*_limit`, `*_port`, `*_connections`, `*_size` -> int; else as is.

        Raises `ValueError` saying what was expected when a text does not read as its
        kind: the name then keeps its last good value (the original made one up).
        """
        if value is None:
            return None
        kind = _native.kind(internal_name)
        if kind == "string" and not isinstance(value, str):
            return value
        if isinstance(value, str):
            return _native.coerce(internal_name, value)
        if isinstance(value, (list, tuple)):
            return _native.coerce(internal_name, ",".join(str(item) for item in value))
        if isinstance(value, bool) and kind == "bool":
            return value
        return _native.coerce(internal_name, str(value))

    # --- what the engine needs -----------------------------------------------------------

    def _has_own_coercion(self) -> bool:
        return type(self)._coerce_config_value is not BaseEtcdClient._coerce_config_value

    def _settings(self) -> Dict[str, str]:
        """The constructor's arguments as the settings' variables."""
        settings = {
            HOST_NAME: self._endpoint,
            USER_NAME: self._username,
            PASSWORD: self._password,
            ROOT_KEY: self._root_key,
            CA_CERT_PATH: self._ca_pem_path,
        }
        if self._use_local_config is not None:
            settings[USE_LOCAL_CONFIG] = "true" if self._use_local_config else "false"
        return {name: value for name, value in settings.items() if value}

    def _control_unit(self) -> bool:
        return False

    def _native_args(self) -> dict:
        prefix = self.get_config_prefix() or None
        keys = self._etcd_key_map or None
        if keys is None and not self._auto_discover_keys:
            keys = {}
        return {
            "prefix": prefix,
            "keys": keys,
            "env_vars": self._env_var_map or None,
            "raw": self._has_own_coercion(),
            "control_unit": self._control_unit(),
            "settings": self._settings(),
        }

    def _native(self):
        if self._native_client is None:
            self._native_client = _native.Client(self._native_args())
        return self._native_client

    def _names(self, values: Dict[str, object]) -> Iterable[str]:
        """Every name to serve: the mapped ones (held or not) and those etcd holds."""
        names = dict.fromkeys(self._etcd_key_map.values())
        names.update(dict.fromkeys(values))
        return names

    def _coerced(self, name: str, value: object, last_good: Dict[str, object]) -> object:
        """`value` through the client's own coercion hook; a value it refuses keeps the
        name's last good value."""
        try:
            return self._coerce_config_value(name, value)
        except Exception as error:  # the hook is user code
            self._logger.warning(
                "update_rejected: %s: %s; the name keeps its last good value",
                name,
                error,
                extra={"event": "update_rejected", "config_name": name},
            )
            return last_good.get(name)

    # --- the original's methods ------------------------------------------------------------

    def validate_connection_settings(self) -> bool:
        """Whether the settings are well-formed (logs why not)."""
        try:
            self._native()
        except _native.EtcdConfigError as error:
            self._logger.error("etcd settings are not valid: %s", error)
            return False
        return True

    def get_etcd_key_map(self) -> Dict[str, str]:
        """Absolute etcd key -> name: the mapped keys, or those etcd holds now."""
        if self._etcd_key_map:
            return dict(self._etcd_key_map)
        return dict(self._native().load()[3])

    def get_values_by_keys(self, keys: Iterable[str]) -> Dict[str, Optional[str]]:
        """The text of each key, `None` for a key etcd does not hold."""
        keys = [str(key) for key in keys]
        found = self._native().get_values_by_keys(keys)
        return {key: found.get(key) for key in keys}

    def get_mapped_values(self, key_map: Dict[str, str]) -> Dict[str, Optional[str]]:
        """The text of each mapped key, by name."""
        raw = self.get_values_by_keys(key_map.keys())
        return {name: raw.get(key) for key, name in key_map.items()}

    def get_config(self, defaults: Optional[Dict[str, object]] = None) -> Dict[str, object]:
        """The configuration once: etcd's values (env vars and `defaults` for names it
        lacks), typed. Problems (rejected values, colliding keys) are logged."""
        defaults = defaults or {}
        values, problems, valid, _ = self._native().load()
        for problem in problems:
            self._logger.warning("config_problem: %s", problem, extra={"event": "config_problem"})
        if not valid:
            raise _native.InvalidError(
                "the configuration is not valid: " + "; ".join(problems)
            )
        result = {}
        own = self._has_own_coercion()
        for name in self._names(values):
            value = values.get(name)
            held = value is not None
            if not held:
                value = defaults.get(name)
            # etcd's values come typed, unless the client reads them itself; a default
            # goes through the rules as the original's did.
            if own or (not held and value is not None):
                value = self._coerced(name, value, {})
            result[name] = value
        return result


class ControlUnitEtcdClient(BaseEtcdClient):
    """The ControlUnit client: every key under `EtcdSettings__RootKey` (default
    `/APPS/ControlUnit`, `/dev` in front when `EtcdSettings__Dev=true`), named in
    snake_case (`CategorizationApiUrl` -> `categorization_api_url`)."""

    def get_config_prefix(self) -> str:
        return _native.default_prefix(self._settings())

    def _control_unit(self) -> bool:
        return type(self).get_config_prefix is ControlUnitEtcdClient.get_config_prefix

    def get_control_unit_key_map(self) -> Dict[str, str]:
        """Absolute etcd key -> name, for the keys etcd holds now."""
        return self.get_etcd_key_map()


EtcdClient = ControlUnitEtcdClient
