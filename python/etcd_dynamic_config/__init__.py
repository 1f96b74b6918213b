"""etcd_dynamic_config: configuration kept in etcd, served from memory.

A drop-in for the Python package of the same name (0.2.x), on a Rust engine: the same
names (`etcd_config`, `EtcdConfig`, `EtcdClient`, `etcd_client`, `BaseEtcdClient`,
`ControlUnitEtcdClient`, `control_unit_client`, `setup_logging`), plus `on_change`,
`snapshot`, `health` and `rejections` on `EtcdConfig`.
"""

import atexit
import logging

from . import _native
from ._client import BaseEtcdClient, ControlUnitEtcdClient, EtcdClient
from ._config import ConfigChange, EtcdConfig, Snapshot, Subscription
from ._native import (
    EtcdConfigError,
    InvalidError,
    RefusedError,
    SettingError,
    UnavailableError,
)

__version__ = "0.1.0"


def setup_logging(level: str = "INFO", sql_level: str = "WARNING") -> None:
    """Sets the level of this library's logger (and of `sqlalchemy`'s, as the original
    did). Logging handlers stay the application's."""
    logging.getLogger("etcd_dynamic_config").setLevel(str(level).upper())
    logging.getLogger("sqlalchemy").setLevel(str(sql_level).upper())


# No change callback may enter the interpreter once it finalizes: at exit, callbacks stop
# starting and those running finish (within 5 s).
atexit.register(_native.shutdown, 5.0)

# The process-wide ControlUnit instances; nothing is contacted until they are used.
control_unit_client = ControlUnitEtcdClient()
etcd_client = control_unit_client
etcd_config = EtcdConfig(client=control_unit_client)

__all__ = [
    "BaseEtcdClient",
    "ConfigChange",
    "ControlUnitEtcdClient",
    "EtcdClient",
    "EtcdConfig",
    "EtcdConfigError",
    "InvalidError",
    "RefusedError",
    "SettingError",
    "Snapshot",
    "Subscription",
    "UnavailableError",
    "control_unit_client",
    "etcd_client",
    "etcd_config",
    "setup_logging",
]
