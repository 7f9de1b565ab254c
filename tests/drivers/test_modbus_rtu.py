"""Modbus RTU over a serial line, without hardware: two pseudo-terminals joined back to back.

The pymodbus serial server opens one pty's slave end, the driver the other's, and a relay copies
bytes between the two master ends: the frames cross the kernel's tty layer as they would cross a
USB-RS485 adapter (no baud-rate timing, which a pty does not emulate; and no parity: this
machine's ptys refuse even parity, so the line runs 8N1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from driver_helpers import by_name, sim_device
from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer

from blackbox.model import Quality
from drivers.base import SourceUnavailable
from drivers.modbus import ModbusDriver, ModbusSourceConfig, encode


@dataclass
class SerialLine:
    server_port: str
    client_port: str
    requests: list[tuple[int, int, int, int]]


@contextlib.asynccontextmanager
async def pty_pair() -> AsyncIterator[tuple[str, str]]:
    """Two pty slave paths whose traffic is relayed to each other."""
    loop = asyncio.get_running_loop()
    ends = [os.openpty() for _ in range(2)]
    for master, slave in ends:
        tty.setraw(slave)
        os.set_blocking(master, False)
    (master_a, slave_a), (master_b, slave_b) = ends

    def relay(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:  # the other side has no reader at the moment
            return
        os.write(dst, data)

    loop.add_reader(master_a, relay, master_a, master_b)
    loop.add_reader(master_b, relay, master_b, master_a)
    try:
        yield os.ttyname(slave_a), os.ttyname(slave_b)
    finally:
        for master, slave in ends:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)


@pytest.fixture
async def serial_line() -> AsyncIterator[SerialLine]:
    """A serial bus with two devices (unit 1 and 2) behind a pymodbus RTU server."""
    dev1 = sim_device(1, hr=[(0, [*encode(21.5, "float32"), *encode(-7, "int16"), *encode(3_000_000, "uint32")])],
                      co=[(0, [True, False, True])])
    dev2 = sim_device(2, ir=[(100, [*encode(6.02, "float32", "CDAB"), *encode("PW-01", "string", length=3)])])
    async with pty_pair() as (server_port, client_port):
        line = SerialLine(server_port, client_port, [])

        def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            if not sending:
                line.requests.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", -1),
                                      getattr(pdu, "count", -1)))
            return pdu

        server = ModbusSerialServer([dev1, dev2], framer=FramerType.RTU, port=server_port, baudrate=19200,
                                    parity="N", trace_pdu=trace)
        await server.serve_forever(background=True)
        try:
            yield line
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


RTU_TAGS: list[dict[str, Any]] = [
    {"name": "temperature", "address": "hr:0", "type": "float32"},
    {"name": "offset", "address": "hr:2", "type": "int16"},
    {"name": "count", "address": "hr:3", "type": "uint32"},
    {"name": "running", "address": "co:0", "type": "bool"},
    {"name": "conductivity", "address": "ir:100", "type": "float32", "order": "CDAB", "unit_id": 2},
    {"name": "loop", "address": "ir:102", "type": "string", "length": 3, "unit_id": 2},
    {"name": "missing", "address": "hr:500", "type": "int16", "unit_id": 2},
]


def rtu_source(port: str, **settings: Any) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate({
        "name": "bus-1", "protocol": "modbus", "transport": "rtu", "serial_port": port, "baudrate": 19200,
        "parity": "N", "timeout": 1.0, **settings,
        "tags": [{"category": "process", "unit": "TEST", **t} for t in RTU_TAGS],
    })


async def test_rtu_reads_every_device_on_the_bus(serial_line: SerialLine) -> None:
    driver = ModbusDriver(rtu_source(serial_line.client_port))
    await driver.connect()
    try:
        samples = by_name(await driver.read())
    finally:
        await driver.close()
    assert {n: s.value for n, s in samples.items() if n != "missing"} == {
        "temperature": 21.5, "offset": -7, "count": 3_000_000, "running": True, "conductivity": 6.02,
        "loop": "PW-01"}
    assert samples["missing"].quality is Quality.BAD
    assert samples["missing"].reason == "Modbus ILLEGAL_ADDRESS (2) reading unit 2 hr:500-500"
    # one request per device and table, one after another on the one bus
    assert sorted(serial_line.requests) == [(1, 1, 0, 1), (1, 3, 0, 5), (2, 3, 500, 1), (2, 4, 100, 5)]


async def test_a_serial_port_belongs_to_one_source(serial_line: SerialLine) -> None:
    first = ModbusDriver(rtu_source(serial_line.client_port))
    second = ModbusDriver(rtu_source(serial_line.client_port, name="bus-1-again"))
    await first.connect()
    try:
        with pytest.raises(SourceUnavailable, match="already used by source 'bus-1'"):
            await second.connect()
    finally:
        await first.close()
    await second.connect()  # free once the first source let go
    try:
        assert by_name(await second.read())["temperature"].value == 21.5
    finally:
        await second.close()
