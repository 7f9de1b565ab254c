"""OPC UA driver (asyncua): poll (one Read per cycle) or subscription mode, Basic256Sha256 security,
namespace URIs resolved at connect.

Registered as protocol ``opcua`` through the ``blackbox.drivers`` entry point.
"""

from drivers.base import DriverSpec
from drivers.opcua.client import OpcUaDriver, create
from drivers.opcua.config import NodeAddress, OpcUaSourceConfig, OpcUaTagConfig, parse_node_address
from drivers.opcua.convert import ConversionError, convert
from drivers.opcua.values import to_sample

SPEC = DriverSpec(protocol="opcua", config_model=OpcUaSourceConfig, factory=create)

__all__ = [
    "SPEC",
    "ConversionError",
    "NodeAddress",
    "OpcUaDriver",
    "OpcUaSourceConfig",
    "OpcUaTagConfig",
    "convert",
    "parse_node_address",
    "to_sample",
]
