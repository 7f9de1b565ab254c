"""Coalesce tags into the fewest Modbus read requests (a pure function; no I/O).

Tags are grouped by device (unit id) and table, sorted by address, and merged while

* the request stays within the protocol's limit (125 registers, 2,000 bits; lower if configured),
* the unused space bridged between two tags is at most ``max_gap`` registers (``16 * max_gap`` bits
  for coils and discrete inputs: a bridged register costs two bytes on the wire, a bridged bit an
  eighth of one), and
* no *break* lies inside the request: a break at address ``b`` keeps ``b - 1`` and ``b`` in
  different requests. Breaks record where a device refused a merged read (illegal address), so a
  re-plan can avoid the hole while still merging elsewhere.

A value is never split across two requests: a tag that does not fit starts a new request, and a
break that falls inside a tag is ignored for that tag.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from drivers.modbus.config import (
    BIT_TABLES,
    MAX_BITS,
    MAX_REGISTERS,
    TABLES,
    ModbusSourceConfig,
    ModbusTagConfig,
    Table,
)

Break = tuple[int, Table, int]
"""``(unit_id, table, address)``: no request may contain both ``address - 1`` and ``address``."""


@dataclass(frozen=True, slots=True)
class TagSlot:
    """Where one tag's value sits in a request's response: ``offset`` registers (or bits) from its start."""

    tag: ModbusTagConfig
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``start`` on device ``unit_id``."""

    unit_id: int
    table: Table
    start: int
    count: int
    tags: tuple[TagSlot, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    def describe(self) -> str:
        """``unit 1 hr:100-109``: how logs and bad-quality reasons name the request."""
        return f"unit {self.unit_id} {self.table}:{self.start}-{self.end - 1}"


def plan_reads(
    tags: Sequence[ModbusTagConfig],
    *,
    unit_id: int = 1,
    max_gap: int = 10,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    breaks: Collection[Break] = (),
) -> list[ReadRequest]:
    """Plan the requests that read ``tags``; ``unit_id`` is the default for tags that name none.

    Requests come ordered by unit id, table (hr, ir, co, di) and address, so a plan is
    deterministic for a given configuration.
    """
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1-{MAX_REGISTERS}, got {max_registers}")
    if not 1 <= max_bits <= MAX_BITS:
        raise ValueError(f"max_bits must be 1-{MAX_BITS}, got {max_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must not be negative, got {max_gap}")

    groups: dict[tuple[int, Table], list[ModbusTagConfig]] = defaultdict(list)
    for tag in tags:
        groups[(tag.unit_id if tag.unit_id is not None else unit_id, tag.table)].append(tag)
    break_index: dict[tuple[int, Table], list[int]] = defaultdict(list)
    for b_unit, b_table, b_address in breaks:
        break_index[(b_unit, b_table)].append(b_address)

    requests: list[ReadRequest] = []
    for key in sorted(groups, key=lambda k: (k[0], TABLES.index(k[1]))):
        unit, table = key
        bits = table in BIT_TABLES
        requests.extend(_merge(unit, table, groups[key],
                               limit=max_bits if bits else max_registers,
                               gap=max_gap * 16 if bits else max_gap,
                               breaks=sorted(break_index.get(key, ()))))
    return requests


def plan_for_source(source: ModbusSourceConfig, breaks: Collection[Break] = ()) -> list[ReadRequest]:
    """:func:`plan_reads` with the source's settings."""
    return plan_reads(source.tags, unit_id=source.unit_id, max_gap=source.max_gap,
                      max_registers=source.max_registers, max_bits=source.max_bits, breaks=breaks)


def _merge(unit: int, table: Table, tags: list[ModbusTagConfig], *, limit: int, gap: int,
           breaks: list[int]) -> list[ReadRequest]:
    """Greedy merge of one (unit, table) group, tags sorted by address (longest first on ties)."""
    spans = sorted(((t.register, t.size, t) for t in tags), key=lambda s: (s[0], -s[1], s[2].name))
    out: list[ReadRequest] = []
    members: list[tuple[int, int, ModbusTagConfig]] = []
    start = end = 0

    def flush() -> None:
        if members:
            slots = tuple(TagSlot(tag, address - start, size) for address, size, tag in members)
            out.append(ReadRequest(unit, table, start, end - start, slots))

    for address, size, tag in spans:
        tag_end = address + size
        fits = (
            members
            and address - end <= gap
            and max(end, tag_end) - start <= limit
            and not _crosses_break(breaks, end, address)
        )
        if fits:
            end = max(end, tag_end)
            members.append((address, size, tag))
        else:
            flush()
            members = [(address, size, tag)]
            start, end = address, tag_end
    flush()
    return out


def _crosses_break(breaks: list[int], end: int, tag_start: int) -> bool:
    """True if extending a request that ends at ``end`` to a tag at ``tag_start`` would cross a break.

    Only addresses from ``end`` on are new to the request; a break inside the tag itself (after
    ``tag_start``) is ignored, since a value is never split.
    """
    return any(end <= b <= tag_start for b in breaks)


def split_point(request: ReadRequest) -> int | None:
    """Where to split a request the device refused as a whole; ``None`` if it holds one value only.

    The split goes between two tags (never through one), at the widest bridged gap, since a
    device refuses a merged read most often because an unmapped hole lies in a gap; among equal
    gaps, nearest the middle, so repeated splitting isolates a refused tag in few steps.
    """
    best: tuple[int, float, int] | None = None  # (gap, -distance from the middle, address)
    middle = request.start + request.count / 2
    covered = request.start
    for slot in sorted(request.tags, key=lambda s: s.offset):
        address = request.start + slot.offset
        if address >= covered and address > request.start:
            candidate = (address - covered, -abs(address - middle), address)
            if best is None or candidate > best:
                best = candidate
        covered = max(covered, address + slot.size)
    return None if best is None else best[2]


def split_request(request: ReadRequest, address: int) -> list[ReadRequest]:
    """The two requests ``request`` becomes with a break at ``address`` (a tag boundary in it)."""
    first = tuple(s for s in request.tags if request.start + s.offset < address)
    second = tuple(s for s in request.tags if request.start + s.offset >= address)
    if not first or not second or any(request.start + s.offset + s.size > address for s in first):
        raise ValueError(f"{address} is not a tag boundary inside {request.describe()}")
    out = []
    for part in (first, second):
        start = request.start + min(s.offset for s in part)
        end = request.start + max(s.offset + s.size for s in part)
        out.append(ReadRequest(request.unit_id, request.table, start, end - start,
                               tuple(TagSlot(s.tag, request.start + s.offset - start, s.size) for s in part)))
    return out
