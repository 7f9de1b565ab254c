"""The Modbus driver: executes the request plan on one link (TCP or RTU) and decodes every tag.

A link carries one request at a time: Modbus TCP devices and gateways rarely pipeline, and a
serial bus cannot. Devices on different links are different sources, polled concurrently by the
agent. See :mod:`drivers.modbus.link` for timeouts and the serial port.

Outcomes of one request:

* a normal response: every tag in it is decoded; a value that does not decode (NaN, ±inf,
  garbage text) is a bad-quality sample with the reason;
* "illegal data address" for a request that merges several tags: the device refuses part of the
  block. The request is split in two at a tag boundary (:func:`~drivers.modbus.planner.split_point`),
  both halves are read in a further round of the same cycle, and the split is kept as a planner *break* for every later
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

from blackbox.columns import SampleColumns
from blackbox.config.sources import SourceConfig
from drivers.base import SourceHealth, SourceUnavailable
from drivers.modbus.answer import ILLEGAL_ADDRESS, LinkError, exception_text
from drivers.modbus.blocks import Block, Columns
from drivers.modbus.config import ModbusSourceConfig
from drivers.modbus.link import Link, SerialPortBusy, claim_serial_port, endpoint, make_link, release_serial_port
from drivers.modbus.planner import Break, ReadRequest, plan_for_source, split_point, split_request

log = logging.getLogger(__name__)


def describe_break(b: Break) -> str:
    """``unit 1 hr:40``: a learned split, as diagnostics show it."""
    unit, table, address = b
    return f"unit {unit} {table}:{address}"


class ModbusDriver:
    """A Modbus source (see the module docstring for what ``read`` does on each outcome)."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.config: SourceConfig = config  # the Driver protocol's view
        self.settings = config
        """The same configuration, with the protocol's own fields."""
        self.health = SourceHealth(details={"endpoint": endpoint(config), "splits": []})
        self._link: Link | None = None
        self._dropped = 0
        """Answers dropped by the links closed before the present one."""
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
        link = make_link(cfg)
        try:
            await link.connect()
        except asyncio.CancelledError:  # the socket may be open already: do not leave it behind
            link.close()
            release_serial_port(cfg)
            raise
        except (TimeoutError, OSError, LinkError) as exc:
            link.close()
            release_serial_port(cfg)
            raise self._unavailable(f"cannot connect to {endpoint(cfg)}: {exc}") from exc
        self._link = link
        self.health.connected = True

    async def read(self) -> SampleColumns:
        """Run the plan on the link (its requests one at a time): one sample per tag, in configuration order.

        The link sends each request as soon as the one before is answered and hands back every
        answer at once; then each is decoded. Requests the device refused with "illegal data
        address" are split and their parts read in a further round.
        """
        link = self._link
        if link is None or not link.connected:
            raise self._unavailable("not connected")
        began = time.perf_counter()
        n = len(self._tags)
        out = Columns.good(n)  # every tag is in exactly one request, which fills it in
        learned: set[Break] = set()
        refused: list[ReadRequest] = []  # requests of the plan the device refused as a whole this cycle
        planned = {id(b.request) for b in self._blocks}
        blocks = self._blocks
        while blocks:
            try:
                answers = await link.read([b.request for b in blocks])
            except (TimeoutError, OSError, LinkError) as exc:  # the message names the request
                await self.close()
                raise self._unavailable(str(exc)) from exc
            except Exception as exc:  # an answer the link could not make sense of: start afresh
                log.warning("%s: unexpected error reading the plan", self.config.name, exc_info=True)
                await self.close()
                raise self._unavailable(f"{type(exc).__name__}: {exc}") from exc
            parts: list[Block] = []  # the refused requests' halves, for the next round
            for block, (values, code) in zip(blocks, answers, strict=True):
                if code is None:
                    block.decode(values, out)
                    continue
                request = block.request
                at = split_point(request) if code == ILLEGAL_ADDRESS else None
                if at is None:
                    reason = f"Modbus {exception_text(code)} reading {request.describe()}"
                    self.health.last_error = reason
                    block.fail(reason, out)
                    continue
                learned.add((request.unit_id, request.table, at))
                if id(request) in planned:
                    refused.append(request)
                parts += [Block(p, self._index) for p in split_request(request, at)]
            blocks = parts
        if learned:
            self.replan(self._breaks | learned)
            self._log_splits(refused)
        if link.dropped:
            self.health.details["dropped_answers"] = self._dropped + link.dropped
        samples = SampleColumns(self._tags, out.values, out.qualities, out.reasons, [None] * n)
        self.health.last_round_trip_s = time.perf_counter() - began
        self.health.count(samples)
        return samples

    async def close(self) -> None:
        link, self._link = self._link, None
        self.health.connected = False
        if link is not None:
            self._dropped += link.dropped
            link.close()
        release_serial_port(self.settings)

    def _unavailable(self, message: str) -> SourceUnavailable:
        self.health.connected = False
        self.health.last_error = message
        return SourceUnavailable(f"{self.config.name}: {message}")


def create(config: SourceConfig) -> ModbusDriver:
    """The :class:`~drivers.base.DriverSpec` factory."""
    if not isinstance(config, ModbusSourceConfig):
        config = ModbusSourceConfig.model_validate(config.model_dump())
    return ModbusDriver(config)
