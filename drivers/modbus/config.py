"""Configuration models of a Modbus source and its tags.

A tag address names a table and a zero-based address: ``hr:100`` (holding register), ``ir:0``
(input register), ``co:3`` (coil), ``di:7`` (discrete input). The value's type, byte/word order,
length, bit, scale and offset say how the registers become a value (see :mod:`drivers.modbus.codec`).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from blackbox.config.sources import SourceConfig, TagConfig

Table = Literal["hr", "ir", "co", "di"]
DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]

TABLES: tuple[Table, ...] = get_args(Table)
BIT_TABLES: frozenset[str] = frozenset({"co", "di"})
NUMERIC_TYPES: frozenset[str] = frozenset(get_args(DataType)) - {"bool", "string"}
TABLE_NAMES = {"hr": "holding register", "ir": "input register", "co": "coil", "di": "discrete input"}
MAX_ADDRESS = 65535
MAX_REGISTERS = 125
"""Most registers one read request may carry (Modbus application protocol, function codes 3 and 4)."""
MAX_BITS = 2000
"""Most coils or discrete inputs one read request may carry (function codes 1 and 2)."""

_ADDRESS = re.compile(r"^\s*(hr|ir|co|di)\s*:\s*(\d{1,5})\s*$", re.IGNORECASE)
_SIZES = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4,
          "float64": 4}


def parse_address(text: str) -> tuple[Table, int]:
    """Split ``"hr:100"`` into ``("hr", 100)``; ``ValueError`` with a clear message otherwise."""
    m = _ADDRESS.match(text)
    if m is None:
        raise ValueError(
            f"address {text!r} is not of the form <table>:<number>, e.g. 'hr:100' "
            "(tables: hr holding register, ir input register, co coil, di discrete input)"
        )
    table = m.group(1).lower()
    number = int(m.group(2))
    if number > MAX_ADDRESS:
        raise ValueError(f"address {text!r}: {number} is beyond the last Modbus address {MAX_ADDRESS}")
    if table not in TABLES:
        raise RuntimeError("internal error: expected table in TABLES")
    return table, number


def register_count(data_type: str, length: int | None = None) -> int:
    """How many 16-bit registers a value of ``data_type`` occupies (``length`` for strings)."""
    if data_type == "string":
        if length is None:
            raise ValueError("a string needs a length in registers")
        return length
    return _SIZES[data_type]


class ModbusTagConfig(TagConfig):
    """One Modbus tag: where it is, and how its registers or bits become a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(description="Table and zero-based address: hr:100, ir:0, co:3, di:7.")
    type: DataType = Field(description="Value type; coils and discrete inputs are always bool.")
    order: Order = Field(
        default="ABCD",
        description="Byte order of multi-byte values: ABCD big-endian; CDAB word-swapped; BADC byte-swapped; "
        "DCBA both (little-endian).",
    )
    length: int | None = Field(default=None, ge=1, le=MAX_REGISTERS,
                               description="Registers a string occupies (2 characters each); strings only.")
    bit: int | None = Field(default=None, ge=0, le=15,
                            description="Bit (0 = least significant) of a register holding a bool.")
    scale: float = Field(default=1.0, allow_inf_nan=False, description="Numeric value = raw * scale + offset.")
    offset: float = Field(default=0.0, allow_inf_nan=False, description="Added after scaling.")
    unit_id: int | None = Field(default=None, ge=0, le=255, description="Device id; default: the source's unit_id.")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        table, number = parse_address(value)
        return f"{table}:{number}"

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTagConfig:
        table, number = parse_address(self.address)
        if table in BIT_TABLES:
            if self.type != "bool":
                raise ValueError(f"a {TABLE_NAMES[table]} ({table}) holds one bit: type must be bool, not {self.type}")
            if self.bit is not None:
                raise ValueError(f"bit applies to a bool in a register, not to a {TABLE_NAMES[table]}")
        if self.type == "string":
            if self.length is None:
                raise ValueError("a string tag needs length: the number of registers it occupies (2 characters each)")
            if self.order not in ("ABCD", "BADC"):
                raise ValueError("a string's order is ABCD (first character in the high byte) or BADC (low byte)")
        elif self.length is not None:
            raise ValueError(f"length applies to strings only, not to {self.type}")
        if self.bit is not None and self.type != "bool":
            raise ValueError(f"bit applies to bool tags only, not to {self.type}")
        if self.type not in NUMERIC_TYPES and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numeric types only, not to {self.type}")
        size = self.size
        if table not in BIT_TABLES and number + size - 1 > MAX_ADDRESS:
            raise ValueError(f"{self.type} at {self.address} needs {size} registers "
                             f"and runs past address {MAX_ADDRESS}")
        return self

    @property
    def table(self) -> Table:
        return parse_address(self.address)[0]

    @property
    def register(self) -> int:
        """The zero-based address within the table."""
        return parse_address(self.address)[1]

    @property
    def size(self) -> int:
        """Registers (or bits, in coil and discrete-input tables) the value occupies."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)


class ModbusSourceConfig(SourceConfig):
    """A Modbus TCP device or gateway, or a Modbus RTU serial line (one bus: its devices by unit_id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["modbus"] = "modbus"
    transport: Literal["tcp", "rtu"] = Field(default="tcp", description="tcp, or rtu (a serial line, RS-485/232).")
    host: str | None = Field(default=None, min_length=1, description="Device or gateway address (tcp).")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port (tcp).")
    serial_port: str | None = Field(default=None, min_length=1, description="Serial device, e.g. /dev/ttyUSB0 (rtu).")
    baudrate: int = Field(default=19200, gt=0, description="Serial speed (rtu).")
    bytesize: Literal[7, 8] = Field(default=8, description="Serial data bits (rtu).")
    parity: Literal["N", "E", "O"] = Field(default="E", description="Serial parity: N, E or O (rtu).")
    stopbits: Literal[1, 2] = Field(default=1, description="Serial stop bits (rtu).")
    unit_id: int = Field(default=1, ge=0, le=255, description="Device id (unit id) of tags that name none.")
    max_gap: int = Field(
        default=10, ge=0, le=MAX_REGISTERS,
        description="Unused registers a merged request may bridge (16 bits per register for coils and inputs).",
    )
    max_registers: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS,
                               description="Most registers per request; lower it for devices that refuse 125.")
    max_bits: int = Field(default=MAX_BITS, ge=1, le=MAX_BITS, description="Most coils or inputs per request.")
    tags: list[ModbusTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _transport_settings(self) -> ModbusSourceConfig:
        if self.transport == "tcp":
            if self.host is None:
                raise ValueError("a Modbus TCP source needs host")
            if self.serial_port is not None:
                raise ValueError("serial_port applies to transport rtu, not tcp")
        else:
            if self.serial_port is None:
                raise ValueError("a Modbus RTU source needs serial_port, e.g. /dev/ttyUSB0")
            if self.host is not None:
                raise ValueError("host applies to transport tcp; a Modbus RTU source names its serial_port")
        for tag in self.tags:
            if tag.table not in BIT_TABLES and tag.size > self.max_registers:
                raise ValueError(f"tag {tag.name!r} occupies {tag.size} registers, more than max_registers "
                                 f"({self.max_registers}) allows in one request")
        return self
