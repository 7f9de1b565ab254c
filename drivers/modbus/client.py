"""The Modbus driver: executes the request plan on one link (TCP or RTU) and decodes every tag.

A link carries one request at a time: Modbus TCP devices and gateways rarely pipeline, and a
serial bus cannot. Devices on different links are different sources, polled concurrently by the
agent. See :mod:`drivers.modbus.link` for timeouts and the serial port.

Outcomes of one request:

* a normal response: every tag in it is decoded; a value that does not decode (NaN, ±inf,
  garbage text) is a bad-quality sample with the reason;
* "illegal data address" for a request that merges several tags: the device refuses part of the
  block. The request is split in two at a tag boundary (:func:`~drivers.modbus.planner.split_point`),
  both halves are read at once, and the split is kept as a planner *break* for every later
  cycle; repeated, this isolates the refused tags, so their neighbours keep good quality and only
  the refused tags read bad;
* any other Modbus exception response (or "illegal data address" for a single tag): the tags of
  that request are bad with the exception as reason, the other requests go on;
* a timeout or a lost connection: the connection is closed and ``read`` raises
  ``SourceUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from blackbox.columns import SampleColumns
from blackbox.config.sources import SourceConfig
from drivers.base import SourceHealth, SourceUnavailable
from drivers.modbus.blocks import Block, Columns
from drivers.modbus.config import BIT_TABLES, ModbusSourceConfig
from drivers.modbus.link import (
    ModbusClient,
    SerialPortBusy,
    claim_serial_port,
    endpoint,
    make_client,
    release_serial_port,
)
from drivers.modbus.planner import Break, ReadRequest, plan_for_source, split_point, split_request

log = logging.getLogger(__name__)


def exception_text(code: int) -> str:
    """``"ILLEGAL_ADDRESS (2)"`` for a Modbus exception code."""
    try:
        return f"{ExcCodes(code).name} ({code})"
    except ValueError:
        return f"exception code {code}"


def describe_break(b: Break) -> str:
    """``unit 1 hr:40``: a learned split, as diagnostics show it."""
    unit, table, address = b
    return f"unit {unit} {table}:{address}"


def send(client: ModbusClient, request: ReadRequest) -> Awaitable[ModbusPDU]:
    """Send one planned read on ``client``; the response (or exception response) when awaited."""
    read: Callable[..., Awaitable[ModbusPDU]] = {
        "hr": client.read_holding_registers,
        "ir": client.read_input_registers,
        "co": client.read_coils,
        "di": client.read_discrete_inputs,
    }[request.table]
    return read(request.start, count=request.count, device_id=request.unit_id)


class ModbusDriver:
    """A Modbus source (see the module docstring for what ``read`` does on each outcome)."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.config: SourceConfig = config  # the Driver protocol's view
        self.settings = config
        """The same configuration, with the protocol's own fields."""
        self.health = SourceHealth(details={"endpoint": endpoint(config), "splits": []})
        self._client: ModbusClient | None = None
        self._in_flight = False
        self._breaks: frozenset[Break] = frozenset()
        self._index = {t.name: i for i, t in enumerate(config.tags)}
        self._tags = tuple(self._index)
        """The tag names of every ``read()``'s columns: the same tuple every cycle."""
        self._blocks: list[Block] = []
        self.replan()

    @property
    def plan(self) -> list[ReadRequest]:
        """The requests one ``read`` sends, in order."""
        return [block.request for block in self._blocks]

    @property
    def breaks(self) -> frozenset[Break]:
        """The splits learned from the device's refusals (and any given to :meth:`replan`)."""
        return self._breaks

    def replan(self, breaks: frozenset[Break] | None = None) -> None:
        """Rebuild the request plan, optionally with new breaks (see :mod:`drivers.modbus.planner`)."""
        if breaks is not None:
            self._breaks = breaks
        self._blocks = [Block(r, self._index) for r in plan_for_source(self.settings, self._breaks)]
        self.health.requests_per_cycle = len(self._blocks)
        self.health.details["splits"] = sorted(describe_break(b) for b in self._breaks)

    def _log_splits(self, refused: list[ReadRequest]) -> None:
        """Name, for each request the device refused, the requests that read its range from now on.

        Logged after the new plan is made: a part may itself be refused and split again in the same
        cycle, and the planner may merge a part with its neighbours, so only the new plan is true.
        """
        for request in refused:
            now = [b.request.describe() for b in self._blocks
                   if (b.request.unit_id, b.request.table) == (request.unit_id, request.table)
                   and b.request.start < request.end and request.start < b.request.end]
            log.warning("%s: the device refused %s (illegal data address); reading it as %s from now on",
                        self.config.name, request.describe(), " and ".join(now))

    async def connect(self) -> None:
        cfg = self.settings
        await self.close()
        try:
            claim_serial_port(cfg)
        except SerialPortBusy as exc:
            raise self._unavailable(str(exc)) from None
        this: list[ModbusClient] = []  # lets the callback tell this client from a later one
        client = make_client(cfg, lambda up: self._on_connection_change(this[0] if this else None, up))
        this.append(client)
        try:
            ok = await client.connect()
        except asyncio.CancelledError:  # the socket may be open already: do not leave it behind
            client.close()
            release_serial_port(cfg)
            raise
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            release_serial_port(cfg)
            raise self._unavailable(f"cannot connect to {endpoint(cfg)}: {exc}") from exc
        if not ok:
            client.close()
            release_serial_port(cfg)
            raise self._unavailable(f"cannot connect to {endpoint(cfg)}")
        self._client = client
        self.health.connected = True

    async def read(self) -> SampleColumns:
        """Run the plan, one request at a time on the link: one sample per tag, in configuration order.

        When an answer brings changed values, the next request is sent before that answer is
        decoded, so decoding overlaps the wire and the device; an answer whose values are all
        unchanged costs nothing to decode and the next request simply follows it.
        """
        client = self._client
        if client is None or not client.connected:
            raise self._unavailable("not connected")
        began = time.perf_counter()
        n = len(self._tags)
        out = Columns.good(n)  # every tag is in exactly one request, which fills it in
        todo = deque(self._blocks)
        learned: set[Break] = set()
        refused: list[ReadRequest] = []  # requests of the plan the device refused as a whole this cycle
        planned = {id(b.request) for b in self._blocks}
        block = todo.popleft() if todo else None
        sent: asyncio.Future[ModbusPDU] | None = None  # the next request, already on its way
        self._in_flight = True
        try:
            while block is not None:
                request = block.request
                try:
                    response = await (sent if sent is not None else send(client, request))
                except (TimeoutError, ModbusException, OSError) as exc:
                    await self.close()
                    raise self._unavailable(f"{request.describe()}: {exc}") from exc
                except Exception as exc:  # a response pymodbus could not make sense of: start afresh
                    log.warning("%s: unexpected error in %s", self.config.name, request.describe(), exc_info=True)
                    await self.close()
                    raise self._unavailable(f"{request.describe()}: {type(exc).__name__}: {exc}") from exc
                sent = None
                if response.isError():
                    code = response.exception_code
                    at = split_point(request) if code == ExcCodes.ILLEGAL_ADDRESS else None
                    if at is not None:
                        learned.add((request.unit_id, request.table, at))
                        if id(request) in planned:
                            refused.append(request)
                        parts = split_request(request, at)
                        todo.extendleft(reversed([Block(p, self._index) for p in parts]))
                    else:
                        reason = f"Modbus {exception_text(code)} reading {request.describe()}"
                        self.health.last_error = reason
                        block.fail(reason, out)
                    block = todo.popleft() if todo else None
                    continue
                values = response.bits if request.table in BIT_TABLES else response.registers
                following = todo.popleft() if todo else None
                if following is not None and block.changed(values):
                    sent = asyncio.ensure_future(send(client, following.request))
                    await asyncio.sleep(0)  # let it go out before decoding this answer
                block.decode(values, out)
                block = following
        finally:
            self._in_flight = False
            if sent is not None and not sent.done():
                sent.cancel()
        if learned:
            self.replan(self._breaks | learned)
            self._log_splits(refused)
        samples = SampleColumns(self._tags, out.values, out.qualities, out.reasons, [None] * n)
        self.health.last_round_trip_s = time.perf_counter() - began
        self.health.count(samples)
        return samples

    async def close(self) -> None:
        client, self._client = self._client, None
        self.health.connected = False
        if client is not None:
            try:
                client.close()
            except Exception:  # close never raises: the connection is gone either way
                log.debug("closing Modbus client of %s failed", self.config.name, exc_info=True)
        release_serial_port(self.settings)

    def _on_connection_change(self, client: ModbusClient | None, connected: bool) -> None:
        """pymodbus callback: on a lost connection, fail the request in flight now, not at its timeout.

        pymodbus only notices the loss; the request waits for its timeout unless its future (an
        internal of pymodbus' transaction manager, hence the defensive lookup) is failed here.
        """
        if connected or client is None or client is not self._client:
            return
        self.health.connected = False
        if not self._in_flight:  # nobody waits for an answer: the next request finds the link closed
            return
        pending = getattr(getattr(client, "ctx", None), "response_future", None)
        if isinstance(pending, asyncio.Future) and not pending.done():
            pending.set_exception(ConnectionException("connection lost"))

    def _unavailable(self, message: str) -> SourceUnavailable:
        self.health.connected = False
        self.health.last_error = message
        return SourceUnavailable(f"{self.config.name}: {message}")


def create(config: SourceConfig) -> ModbusDriver:
    """The :class:`~drivers.base.DriverSpec` factory."""
    if not isinstance(config, ModbusSourceConfig):
        config = ModbusSourceConfig.model_validate(config.model_dump())
    return ModbusDriver(config)
