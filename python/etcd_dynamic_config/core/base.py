"""`etcd_dynamic_config.core.base`, as the original names it."""

from .._client import BaseEtcdClient

__all__ = ["BaseEtcdClient"]
