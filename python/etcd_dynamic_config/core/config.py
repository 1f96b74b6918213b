"""`etcd_dynamic_config.core.config`, as the original names it."""

from .._config import EtcdConfig

__all__ = ["EtcdConfig"]
