"""The original's module paths (`etcd_dynamic_config.core.*`), for imports that name them."""

from .._client import EtcdClient
from .._config import EtcdConfig
from .. import etcd_client, setup_logging

__all__ = ["EtcdClient", "etcd_client", "EtcdConfig", "setup_logging"]
