"""Driver configuration models: mistakes are errors that say what is wrong; registration works."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from blackbox.config import parse_config
from drivers import registry
from drivers.modbus import ModbusDriver, ModbusSourceConfig
from drivers.opcua import OpcUaDriver, OpcUaSourceConfig, parse_node_address


def modbus(tag: dict[str, Any] | None = None, **source: Any) -> ModbusSourceConfig:
    raw: dict[str, Any] = {"name": "plc", "protocol": "modbus", "host": "10.0.0.5", **source}
    if tag is not None:
        raw["tags"] = [{"name": "t", "address": "hr:0", "type": "int16", "category": "process", "unit": "U", **tag}]
    return ModbusSourceConfig.model_validate(raw)


def opcua(tag: dict[str, Any] | None = None, **source: Any) -> OpcUaSourceConfig:
    raw: dict[str, Any] = {"name": "ua", "protocol": "opcua", "endpoint": "opc.tcp://plc:4840", **source}
    if tag is not None:
        raw["tags"] = [{"name": "t", "address": "s=x", "type": "Double", "category": "process", "unit": "U", **tag}]
    return OpcUaSourceConfig.model_validate(raw)


def error_of(make: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(dotted location, message) of the single validation error."""
    with pytest.raises(ValidationError) as raised:
        make(*args, **kwargs)
    errors = raised.value.errors(include_url=False)
    assert len(errors) == 1, errors
    return ".".join(str(p) for p in errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize("tag,where,message", [
    ({"address": "40001"}, "tags.0.address", "not of the form <table>:<number>, e.g. 'hr:100'"),
    ({"address": "hx:1"}, "tags.0.address", "tables: hr holding register, ir input register, co coil"),
    ({"address": "hr:70000"}, "tags.0.address", "beyond the last Modbus address 65535"),
    ({"address": "hr:65535", "type": "float32"}, "tags.0", "needs 2 registers and runs past address 65535"),
    ({"type": "float"}, "tags.0.type", "Input should be 'int16', 'uint16'"),
    ({"type": "string"}, "tags.0", "a string tag needs length"),
    ({"type": "string", "length": 4, "order": "CDAB"}, "tags.0", "a string's order is ABCD"),
    ({"length": 2}, "tags.0", "length applies to strings only"),
    ({"type": "int16", "bit": 3}, "tags.0", "bit applies to bool tags only"),
    ({"type": "bool", "bit": 16}, "tags.0.bit", "less than or equal to 15"),
    ({"address": "co:1"}, "tags.0", "a coil (co) holds one bit: type must be bool, not int16"),
    ({"address": "di:1", "type": "bool", "bit": 1}, "tags.0", "bit applies to a bool in a register"),
    ({"type": "bool", "scale": 10}, "tags.0", "scale and offset apply to numeric types only"),
    ({"order": "ACBD"}, "tags.0.order", "Input should be 'ABCD', 'CDAB', 'BADC' or 'DCBA'"),
    ({"unit_id": 256}, "tags.0.unit_id", "less than or equal to 255"),
    ({"scale": float("nan")}, "tags.0.scale", "finite number"),
    ({"word_order": "CDAB"}, "tags.0.word_order", "Extra inputs are not permitted"),
])
def test_modbus_tag_mistakes(tag: dict[str, Any], where: str, message: str) -> None:
    loc, msg = error_of(modbus, tag)
    assert loc == where
    assert message in msg


@pytest.mark.parametrize("source,message", [
    ({"host": None}, "a Modbus TCP source needs host"),
    ({"transport": "rtu", "host": None}, "a Modbus RTU source needs serial_port"),
    ({"serial_port": "/dev/ttyS0"}, "serial_port applies to transport rtu"),
    ({"transport": "udp"}, "Input should be 'tcp' or 'rtu'"),
    ({"max_registers": 126}, "less than or equal to 125"),
    ({"max_bits": 2001}, "less than or equal to 2000"),
    ({"max_gap": -1}, "greater than or equal to 0"),
    ({"port": 0}, "greater than or equal to 1"),
    ({"hots": "x"}, "Extra inputs are not permitted"),
])
def test_modbus_source_mistakes(source: dict[str, Any], message: str) -> None:
    _, msg = error_of(modbus, None, **source)
    assert message in msg


def test_a_string_longer_than_one_request_is_refused() -> None:
    _, msg = error_of(modbus, {"type": "string", "length": 20}, max_registers=16)
    assert "occupies 20 registers, more than max_registers (16)" in msg


def test_modbus_defaults_and_normalised_address() -> None:
    config = modbus({"address": " HR : 0100 ", "type": "float32"})
    tag = config.tags[0]
    assert (tag.address, tag.table, tag.register, tag.size) == ("hr:100", "hr", 100, 2)
    assert (tag.order, tag.scale, tag.offset, tag.unit_id) == ("ABCD", 1.0, 0.0, None)
    assert (config.port, config.unit_id, config.max_gap, config.transport) == (502, 1, 10, "tcp")


@pytest.mark.parametrize("address,message", [
    ("EM-01.temperature", "is not a node id"),
    ("i=abc", "the i= identifier must be an unsigned 32-bit number"),
    ("i=-1", "the i= identifier must be an unsigned 32-bit number"),
    ("ns=x;s=a", "is not a node id"),
    ("ns=70000;i=1", "namespace index 70000 is above 65535"),
    ("g=not-a-guid", "the g= identifier must be a GUID"),
    ("s=", "is not a node id"),
])
def test_opcua_address_mistakes(address: str, message: str) -> None:
    loc, msg = error_of(opcua, {"address": address})
    assert loc == "tags.0.address"
    assert message in msg


def test_opcua_address_forms() -> None:
    a = parse_node_address("s=EM-01.temperature")
    assert (a.namespace_index, a.namespace_uri, a.kind, a.identifier) == (None, None, "s", "EM-01.temperature")
    a = parse_node_address("i=1234")
    assert (a.namespace_index, a.kind, a.identifier) == (None, "i", 1234)
    a = parse_node_address("ns=2;s=Line;1.speed")  # a string identifier may hold ';'
    assert (a.namespace_index, a.identifier) == (2, "Line;1.speed")
    a = parse_node_address("nsu=urn:acme:line;1;i=7")  # the URI runs to the identifier
    assert (a.namespace_uri, a.kind, a.identifier) == ("urn:acme:line;1", "i", 7)
    a = parse_node_address("g=72962b91-fa75-4ae6-8d28-b404dc7daf63")
    assert a.identifier == uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63")
    assert parse_node_address("b=AQID").identifier == b"\x01\x02\x03"


@pytest.mark.parametrize("tag,source,message", [
    ({"type": "double"}, {}, "Input should be 'Double', 'Float'"),
    ({"typ": "Double"}, {}, "Extra inputs are not permitted"),
    (None, {"endpoint": "http://plc:4840"}, "String should match pattern"),
    (None, {"username": "op"}, "username and password go together"),
    (None, {"password": "x"}, "username and password go together"),
    (None, {"security": "Sign"}, "security Sign needs certificate and private_key"),
    (None, {"security": "Basic256"}, "Input should be 'None', 'Sign' or 'SignAndEncrypt'"),
])
def test_opcua_mistakes(tag: dict[str, Any] | None, source: dict[str, Any], message: str) -> None:
    _, msg = error_of(opcua, tag, **source)
    assert message in msg


def test_opcua_security_null_means_none_and_the_password_stays_secret() -> None:
    config = opcua(None, security=None, username="op", password="hunter2")
    assert config.security == "None"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())


def test_drivers_are_registered_through_entry_points() -> None:
    assert {"modbus", "opcua"} <= set(registry.names())
    assert registry.config_model("modbus") is ModbusSourceConfig
    assert registry.config_model("opcua") is OpcUaSourceConfig
    assert isinstance(registry.create(modbus({})), ModbusDriver)
    assert isinstance(registry.create(opcua({})), OpcUaDriver)


MODBUS_FILE = """
site: {id: S1, name: Site, licence: L-1}
gateway: {id: gw-1}
sources:
  - name: plc
    protocol: modbus
    host: 127.0.0.1
    tags:
      - {name: a, address: "hr:0", type: float32, order: CDAB, scale: 0.1, category: process, unit: EM-01}
      - {name: b, address: "hr:10", type: string, length: 4, category: context, unit: EM-01}
"""


def test_a_config_file_with_modbus_tag_fields_loads() -> None:
    config = parse_config(MODBUS_FILE)
    source = config.sources[0]
    assert isinstance(source, ModbusSourceConfig)
    assert source.tags[0].order == "CDAB"


def test_opcua_endpoint_must_not_carry_credentials() -> None:
    _, msg = error_of(opcua, None, endpoint="opc.tcp://op:secret@plc:4840")
    assert "put credentials in username and password" in msg
