"""`etcd_dynamic_config.core.client`, as the original names it."""

from .._client import EtcdClient
from .. import etcd_client

__all__ = ["EtcdClient", "etcd_client"]
