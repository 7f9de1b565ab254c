"""Real servers for the driver tests, started per test on 127.0.0.1 and a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from driver_helpers import ModbusTestServer, StartModbus
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimDevice


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
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        handle = ModbusTestServer(server, port, log)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop()
