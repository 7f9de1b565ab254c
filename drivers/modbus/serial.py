"""A Modbus RTU serial line through pymodbus' serial client, as a :class:`~drivers.modbus.link.Link`.

Every client gets the source's timeout, no retries and no automatic reconnect (pymodbus' own 3 s
with 3 retries could stall a source for about 12 s): the agent owns reconnecting, with back-off,
after :class:`~drivers.base.SourceUnavailable`. Register answers are decoded in one step
(:mod:`drivers.modbus.pdu`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.modbus.answer import Answer, LinkError, naming
from drivers.modbus.config import BIT_TABLES, ModbusSourceConfig
from drivers.modbus.pdu import register_fast_responses
from drivers.modbus.planner import ReadRequest

log = logging.getLogger(__name__)


class SerialLink:
    """A serial bus: its devices by unit id, one request at a time."""

    def __init__(self, cfg: ModbusSourceConfig) -> None:
        if cfg.serial_port is None:
            raise RuntimeError("internal error: no serial_port (the config model requires it for rtu)")
        self._client = AsyncModbusSerialClient(
            cfg.serial_port, framer=FramerType.RTU, baudrate=cfg.baudrate, bytesize=cfg.bytesize,
            parity=cfg.parity, stopbits=cfg.stopbits, name=f"blackbox:{cfg.name}", timeout=cfg.timeout,
            retries=0, reconnect_delay=0, trace_connect=self._on_connection_change)
        register_fast_responses(self._client)
        self._in_flight = False
        self._port = cfg.serial_port

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    @property
    def dropped(self) -> int:
        return 0  # pymodbus drops such answers itself, with a warning of its own

    async def connect(self) -> None:
        try:
            opened = await self._client.connect()
        except ModbusException as exc:
            raise LinkError(str(exc)) from exc
        if not opened:
            raise ConnectionError(f"cannot open {self._port}")

    def read(self, requests: Sequence[ReadRequest]) -> asyncio.Future[list[Answer]]:
        return asyncio.ensure_future(self._read_all(requests))

    async def _read_all(self, requests: Sequence[ReadRequest]) -> list[Answer]:
        answers = []
        for request in requests:
            try:
                answers.append(await self._read(request))
            except ModbusException as exc:
                raise naming(request, LinkError(str(exc))) from exc
            except (TimeoutError, OSError) as exc:
                raise naming(request, exc) from exc
        return answers

    async def _read(self, request: ReadRequest) -> Answer:
        self._in_flight = True
        try:
            response = await send(self._client, request)
        finally:
            self._in_flight = False
        if response.isError():
            return Answer((), response.exception_code)
        return Answer(response.bits if request.table in BIT_TABLES else response.registers, None)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # close never raises: the connection is gone either way
            log.debug("closing the Modbus client of %s failed", self._port, exc_info=True)

    def _on_connection_change(self, connected: bool) -> None:
        """pymodbus callback: on a lost connection, fail the request in flight now, not at its timeout.

        pymodbus only notices the loss; the request waits for its timeout unless its future (an
        internal of pymodbus' transaction manager, hence the defensive lookup) is failed here.
        """
        if connected or not self._in_flight:
            return
        pending = getattr(getattr(self._client, "ctx", None), "response_future", None)
        if isinstance(pending, asyncio.Future) and not pending.done():
            pending.set_exception(ConnectionException("connection lost"))


def send(client: ModbusBaseClient, request: ReadRequest) -> Awaitable[ModbusPDU]:
    """Send one planned read on a pymodbus client; the response (or exception response) when awaited."""
    read: Callable[..., Awaitable[ModbusPDU]] = {
        "hr": client.read_holding_registers,
        "ir": client.read_input_registers,
        "co": client.read_coils,
        "di": client.read_discrete_inputs,
    }[request.table]
    return read(request.start, count=request.count, device_id=request.unit_id)
