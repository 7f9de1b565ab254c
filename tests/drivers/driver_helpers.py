"""Helpers and fixtures of the driver tests (a module with a unique name, so it never shadows another
conftest); the fixture starts real servers per test on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from blackbox.model import Sample

Block = Sequence[tuple[int, Sequence[int]]]
"""(start address, register values) runs; addresses between runs are invalid (illegal address)."""
BitBlock = Sequence[tuple[int, Sequence[bool]]]


def sim_device(device_id: int = 1, *, hr: Block = (), ir: Block = (), co: BitBlock = (),
               di: BitBlock = ()) -> SimDevice:
    """A device with separate coil, discrete-input, holding and input tables (bit addressing for bits)."""

    def registers(block: Block) -> list[SimData]:
        runs = block or [(60000, [0])]  # every table needs one run; far away from the tests' addresses
        return [SimData(address=a, values=list(v), datatype=DataType.REGISTERS) for a, v in runs]

    def bits(block: BitBlock) -> list[SimData]:
        runs = block or [(60000, [False])]
        return [SimData(address=a, values=list(v), datatype=DataType.BITS) for a, v in runs]

    return SimDevice(id=device_id, simdata=(bits(co), bits(di), registers(hr), registers(ir)))


@dataclass
class ModbusTestServer:
    server: ModbusTcpServer
    port: int
    requests: list[tuple[int, int, int, int]] = field(default_factory=list)
    """Every request received: (device id, function code, address, count)."""

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


def modbus_source(port: int, tags: Sequence[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    """A Modbus source configuration (as parsed YAML) for a test server."""
    return {
        "name": "plc",
        "protocol": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "timeout": 1.0,
        **settings,
        "tags": [{"category": "process", "unit": "TEST", **t} for t in tags],
    }


StartModbus = Callable[[Sequence[SimDevice]], Awaitable[ModbusTestServer]]


def by_name(samples: Sequence[Sample]) -> dict[str, Sample]:
    return {s.tag: s for s in samples}


@pytest.fixture
async def modbus_server() -> AsyncIterator[StartModbus]:
    """``await modbus_server([sim_device(...), ...])`` starts a server on 127.0.0.1 and a free port."""
    started: list[ModbusTestServer] = []

    async def start(devices: Sequence[SimDevice]) -> ModbusTestServer:
        log: list[tuple[int, int, int, int]] = []

        def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            if not sending:
                log.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", -1), getattr(pdu, "count", -1)))
            return pdu

        server = ModbusTcpServer(list(devices), address=("127.0.0.1", 0), trace_pdu=trace)
        await server.serve_forever(background=True)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)  # what pymodbus types as a BaseTransport is the listening server
        port = listener.sockets[0].getsockname()[1]
        handle = ModbusTestServer(server, port, log)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop()
