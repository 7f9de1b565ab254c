"""The Modbus TCP side of the simulated line: WS-01, WT-01, OT-01, FL-01, PW-01, CR-01.

One device (unit id 1 by default) with four separate tables (coils, discrete inputs, holding and
input registers), built with pymodbus' ``SimData``/``SimDevice``. Addresses 0..size-1 of each
table are valid (unused ones read 0); beyond them the device answers "illegal data address".
Everything is read-only: writes are refused with "illegal data address".

Values are encoded here, with :mod:`struct`, independently of the driver's codec (a shared
codec bug would otherwise go unnoticed): float32 big-endian (ABCD), uint16/uint32 big-endian,
strings two ASCII characters per register, first character in the high byte, NUL-padded.
A tag with bad quality serves NaN if it is a float (other types keep their value).

The process model publishes a snapshot by replacing the encoded images; a request copies the
current image into pymodbus' register block through the device ``action`` hook, so a read of
any range is always one consistent snapshot. The same hook plays the device faults: a read that
touches an :class:`~blackbox.sim.faults.IllegalAddress` block is refused with exception 2.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from blackbox.model import Value
from blackbox.sim.faults import FaultRegistry, IllegalAddress
from blackbox.sim.process import Snapshot
from blackbox.sim.tags import MODBUS_TABLE_SIZE, SimTag, modbus_tags

TABLE_OF_FUNCTION: dict[int, str] = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr", 22: "hr",
                                     23: "hr", 4: "ir"}
BIT_TABLES = ("co", "di")


def encode_registers(tag: SimTag, value: Value, bad: bool = False) -> list[int]:
    """The registers of ``value`` as the simulated PLC stores it (see the module docstring)."""
    if tag.type == "float32":
        number = math.nan if bad else float(value)  # type: ignore[arg-type]
        raw = struct.pack(">f", number)
    elif tag.type == "uint32":
        raw = struct.pack(">I", int(value) & 0xFFFFFFFF)  # type: ignore[arg-type]
    elif tag.type == "uint16":
        raw = struct.pack(">H", int(value) & 0xFFFF)  # type: ignore[arg-type]
    elif tag.type == "string":
        size = tag.size * 2
        text = str(value).encode("ascii", errors="replace")[:size]
        raw = text.ljust(size, b"\x00")
    else:
        raise ValueError(f"no register encoding for {tag.type} ({tag.name})")
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def _pack_bits(bits: list[bool]) -> list[int]:
    """Bits to registers the way pymodbus' bit blocks store them: bit 0 of register 0 first."""
    registers = []
    for base in range(0, len(bits), 16):
        registers.append(sum(1 << i for i, b in enumerate(bits[base:base + 16]) if b))
    return registers


def _bits(table: str) -> list[SimData]:
    return [SimData(address=0, values=[False] * MODBUS_TABLE_SIZE[table], datatype=DataType.BITS)]


def _registers(table: str) -> list[SimData]:
    return [SimData(address=0, count=MODBUS_TABLE_SIZE[table], values=0, datatype=DataType.REGISTERS,
                    readonly=True)]


class ModbusServer:
    """A pymodbus TCP server serving ``tags`` from process snapshots."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5020, *, unit_id: int = 1,
                 tags: Iterable[SimTag] | None = None, faults: FaultRegistry | None = None) -> None:
        self.host = host
        self._faults = faults
        self.unit_id = unit_id
        self._port = port
        self._tags = list(tags) if tags is not None else modbus_tags()
        for tag in self._tags:
            end = tag.register + (1 if tag.table in BIT_TABLES else tag.size)
            if end > MODBUS_TABLE_SIZE[tag.table]:
                raise ValueError(f"{tag.name} at {tag.address} lies beyond the {tag.table} table")
        self._images: dict[str, list[int]] = {}
        self._server: ModbusTcpServer | None = None

    @property
    def port(self) -> int:
        """The port bound (the OS's choice when 0 was requested); the requested one before start."""
        return self._port

    async def start(self, initial: Snapshot) -> None:
        self.publish(initial)
        device = SimDevice(id=self.unit_id, simdata=(_bits("co"), _bits("di"), _registers("hr"), _registers("ir")),
                           action=self._on_request)
        server = ModbusTcpServer(device, address=(self.host, self._port))
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if sockets:
            self._port = int(sockets[0].getsockname()[1])  # a restart binds the same port again
        self._server = server

    def publish(self, snapshot: Snapshot) -> None:
        """Encode ``snapshot`` into fresh register images (cheap: a few dozen values)."""
        images: dict[str, list[int]] = {t: [0] * MODBUS_TABLE_SIZE[t] for t in MODBUS_TABLE_SIZE}
        for tag in self._tags:
            value = snapshot.values[tag.name]
            if tag.table in BIT_TABLES:
                images[tag.table][tag.register] = 1 if value else 0
            else:
                start = tag.register
                images[tag.table][start:start + tag.size] = encode_registers(tag, value, tag.name in snapshot.bad)
        for table in BIT_TABLES:
            images[table] = _pack_bits([b != 0 for b in images[table]])
        self._images = images

    async def _on_request(self, function_code: int, start_address: int, address: int, count: int,
                          current_registers: list[int], set_values: list[int] | list[bool] | None,
                          ) -> ExcCodes | None:
        """pymodbus' device hook: refuse writes, and serve the latest image."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        table = TABLE_OF_FUNCTION[function_code]
        if self._faults is not None and any(
                isinstance(f, IllegalAddress) and f.refuses(table, address, count) for f in self._faults):
            return ExcCodes.ILLEGAL_ADDRESS
        image = self._images[table]
        current_registers[:len(image)] = image
        return None

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            await asyncio.sleep(0)  # let the transports run their close callbacks
