"""The Modbus TCP driver: executes the request plan on one connection and decodes every tag.

One connection carries one request at a time (Modbus TCP devices and gateways rarely pipeline).
pymodbus' own timeout of 3 s with 3 retries could stall a source for ~12 s, so the driver sets
the source's timeout with no retries, and no automatic reconnect: the agent owns reconnecting,
with back-off, after :class:`~drivers.base.SourceUnavailable`.

Outcomes of one request:

* a normal response: every tag in it is decoded; a value that does not decode (NaN, ±inf,
  garbage text) is a bad-quality sample with the reason;
* a Modbus exception response (illegal address, gateway target not responding, …): the tags of
  that request are bad with the exception as reason, the other requests go on;
* a timeout or a lost connection: the connection is closed and ``read`` raises
  ``SourceUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from blackbox.config import SourceConfig
from blackbox.model import Quality, Sample, Value
from drivers.base import SourceHealth, SourceUnavailable
from drivers.modbus.codec import DecodeError, Decoder, make_decoder
from drivers.modbus.config import BIT_TABLES, NUMERIC_TYPES, ModbusSourceConfig, ModbusTagConfig
from drivers.modbus.planner import Break, ReadRequest, plan_for_source

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A tag ready to decode: its name, offset in the response, decoder and scaling."""

    name: str
    offset: int
    decoder: Decoder | None  # None: a bit table, the value is the bit itself
    scale: float
    add: float
    scaled: bool


def _slots(request: ReadRequest) -> tuple[_Slot, ...]:
    return tuple(_slot(s.tag, s.offset) for s in request.tags)


def _slot(tag: ModbusTagConfig, offset: int) -> _Slot:
    decoder = None if tag.table in BIT_TABLES else make_decoder(tag.type, tag.order, length=tag.length, bit=tag.bit)
    scaled = tag.type in NUMERIC_TYPES and (tag.scale != 1.0 or tag.offset != 0.0)
    return _Slot(tag.name, offset, decoder, tag.scale, tag.offset, scaled)


def exception_text(code: int) -> str:
    """``"ILLEGAL_ADDRESS (2)"`` for a Modbus exception code."""
    try:
        return f"{ExcCodes(code).name} ({code})"
    except ValueError:
        return f"exception code {code}"


class ModbusDriver:
    """A Modbus TCP source (see the module docstring for what ``read`` does on each outcome)."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.config: SourceConfig = config  # the Driver protocol's view
        self.settings = config
        """The same configuration, with the protocol's own fields."""
        self.health = SourceHealth()
        self._client: AsyncModbusTcpClient | None = None
        self._breaks: frozenset[Break] = frozenset()
        self._plan: list[tuple[ReadRequest, tuple[_Slot, ...]]] = []
        self._order = [t.name for t in config.tags]
        self.replan()

    @property
    def plan(self) -> list[ReadRequest]:
        """The requests one ``read`` sends, in order."""
        return [request for request, _ in self._plan]

    def replan(self, breaks: frozenset[Break] | None = None) -> None:
        """Rebuild the request plan, optionally with new breaks (see :mod:`drivers.modbus.planner`)."""
        if breaks is not None:
            self._breaks = breaks
        self._plan = [(r, _slots(r)) for r in plan_for_source(self.settings, self._breaks)]
        self.health.requests_per_cycle = len(self._plan)

    async def connect(self) -> None:
        cfg = self.settings
        if cfg.transport != "tcp":
            self.health.last_error = "Modbus RTU is not implemented yet"
            raise SourceUnavailable(f"{cfg.name}: Modbus RTU (serial) transport is not implemented yet")
        await self.close()
        assert cfg.host is not None  # the config model requires it for tcp
        this: list[AsyncModbusTcpClient] = []  # lets the callback tell this client from a later one
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=f"blackbox:{cfg.name}",
            timeout=cfg.timeout,
            retries=0,
            reconnect_delay=0,  # the agent reconnects, with its own back-off
            trace_connect=lambda up: self._on_connection_change(this[0] if this else None, up),
        )
        this.append(client)
        try:
            ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise self._unavailable(f"cannot connect to {cfg.host}:{cfg.port}: {exc}") from exc
        if not ok:
            client.close()
            raise self._unavailable(f"cannot connect to {cfg.host}:{cfg.port}")
        self._client = client
        self.health.connected = True

    async def read(self) -> list[Sample]:
        client = self._client
        if client is None or not client.connected:
            raise self._unavailable("not connected")
        began = time.perf_counter()
        samples: dict[str, Sample] = {}
        for request, slots in self._plan:
            try:
                response = await self._execute(client, request)
            except (TimeoutError, ModbusException, OSError) as exc:
                await self.close()
                raise self._unavailable(f"{request.describe()}: {exc}") from exc
            except Exception as exc:  # a response pymodbus could not make sense of: start afresh
                log.warning("%s: unexpected error in %s", self.config.name, request.describe(), exc_info=True)
                await self.close()
                raise self._unavailable(f"{request.describe()}: {type(exc).__name__}: {exc}") from exc
            if response.isError():
                reason = f"Modbus {exception_text(response.exception_code)} reading {request.describe()}"
                self.health.last_error = reason
                for slot in slots:
                    samples[slot.name] = Sample(slot.name, None, Quality.BAD, reason)
                continue
            if request.table in BIT_TABLES:
                _decode_bits(response.bits, request, slots, samples)
            else:
                _decode_registers(response.registers, request, slots, samples)
        self.health.last_round_trip_s = time.perf_counter() - began
        return [samples[name] for name in self._order]

    async def close(self) -> None:
        client, self._client = self._client, None
        self.health.connected = False
        if client is not None:
            try:
                client.close()
            except Exception:  # close never raises: the connection is gone either way
                log.debug("closing Modbus client of %s failed", self.config.name, exc_info=True)

    def _execute(self, client: AsyncModbusTcpClient, request: ReadRequest) -> Awaitable[ModbusPDU]:
        read: Callable[..., Awaitable[ModbusPDU]] = {
            "hr": client.read_holding_registers,
            "ir": client.read_input_registers,
            "co": client.read_coils,
            "di": client.read_discrete_inputs,
        }[request.table]
        return read(request.start, count=request.count, device_id=request.unit_id)

    def _on_connection_change(self, client: AsyncModbusTcpClient | None, connected: bool) -> None:
        """pymodbus callback: on a lost connection, fail the request in flight now, not at its timeout.

        pymodbus only notices the loss; the request waits for its timeout unless its future (an
        internal of pymodbus' transaction manager, hence the defensive lookup) is failed here.
        """
        if connected or client is None or client is not self._client:
            return
        self.health.connected = False
        pending = getattr(getattr(client, "ctx", None), "response_future", None)
        if isinstance(pending, asyncio.Future) and not pending.done():
            pending.set_exception(ConnectionException("connection lost"))

    def _unavailable(self, message: str) -> SourceUnavailable:
        self.health.connected = False
        self.health.last_error = message
        return SourceUnavailable(f"{self.config.name}: {message}")


def _decode_registers(registers: Sequence[int], request: ReadRequest, slots: tuple[_Slot, ...],
                      out: dict[str, Sample]) -> None:
    if len(registers) < request.count:
        reason = f"short response: {len(registers)} of {request.count} registers for {request.describe()}"
        for slot in slots:
            out[slot.name] = Sample(slot.name, None, Quality.BAD, reason)
        return
    for slot in slots:
        assert slot.decoder is not None
        try:
            value: Value = slot.decoder(registers, slot.offset)
        except DecodeError as exc:
            out[slot.name] = Sample(slot.name, None, Quality.BAD, str(exc))
            continue
        if slot.scaled:
            value = value * slot.scale + slot.add  # type: ignore[operator]
            if not math.isfinite(value):
                out[slot.name] = Sample(slot.name, None, Quality.BAD, "scaled value is not finite")
                continue
        out[slot.name] = Sample(slot.name, value)


def _decode_bits(bits: Sequence[bool], request: ReadRequest, slots: tuple[_Slot, ...],
                 out: dict[str, Sample]) -> None:
    if len(bits) < request.count:  # pymodbus pads bits to whole bytes, so more is normal
        reason = f"short response: {len(bits)} of {request.count} bits for {request.describe()}"
        for slot in slots:
            out[slot.name] = Sample(slot.name, None, Quality.BAD, reason)
        return
    for slot in slots:
        out[slot.name] = Sample(slot.name, bool(bits[slot.offset]))


def create(config: SourceConfig) -> ModbusDriver:
    """The :class:`~drivers.base.DriverSpec` factory."""
    if not isinstance(config, ModbusSourceConfig):
        config = ModbusSourceConfig.model_validate(config.model_dump())
    return ModbusDriver(config)
