"""Modbus driver: TCP and RTU (serial) links, request planner with learned splits, and codecs.

Registered as protocol ``modbus`` through the ``blackbox.drivers`` entry point.
"""

from drivers.base import DriverSpec
from drivers.modbus.client import ModbusDriver, create
from drivers.modbus.codec import DecodeError, decode, encode, make_decoder
from drivers.modbus.config import ModbusSourceConfig, ModbusTagConfig, parse_address
from drivers.modbus.planner import ReadRequest, TagSlot, plan_for_source, plan_reads

SPEC = DriverSpec(protocol="modbus", config_model=ModbusSourceConfig, factory=create)

__all__ = [
    "SPEC",
    "DecodeError",
    "ModbusDriver",
    "ModbusSourceConfig",
    "ModbusTagConfig",
    "ReadRequest",
    "TagSlot",
    "decode",
    "encode",
    "make_decoder",
    "parse_address",
    "plan_for_source",
    "plan_reads",
]
