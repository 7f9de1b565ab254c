"""OPC UA driver (asyncua): poll mode with one Read per cycle, namespace URIs resolved at connect.

Registered as protocol ``opcua`` through the ``blackbox.drivers`` entry point.
"""

from drivers.base import DriverSpec
from drivers.opcua.client import OpcUaDriver, create, to_sample
from drivers.opcua.config import NodeAddress, OpcUaSourceConfig, OpcUaTagConfig, parse_node_address
from drivers.opcua.convert import ConversionError, convert

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
