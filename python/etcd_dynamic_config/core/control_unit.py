"""`etcd_dynamic_config.core.control_unit`, as the original names it."""

from .._client import ControlUnitEtcdClient
from .. import control_unit_client

__all__ = ["ControlUnitEtcdClient", "control_unit_client"]
