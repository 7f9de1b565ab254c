"""A batch's records document, assembled from runs of reading rows and event rows within a byte cap.

The sealer of a large line seals tens of thousands of readings a batch. Made as one list of rows
and dumped as one document, such a batch held every row as Python objects and the document at
once (21.6 MiB at 50,000 readings), which the agent's memory kept. Here the readings come as runs
(consecutive seqs: one stored block of the gateway buffer), and a run becomes rows only while it
is dumped; what is kept is its JSON text, in the document that grows around it (11 MiB at the
peak, the compressor's output buffer included). The bytes are those
:func:`~blackbox.seal.records.dump_document` writes for the same rows: each row, and each run of
rows, serialises to the same bytes alone as inside the document.

The cap is exact (``max_bytes``): the records are taken in seq order while the document stays
within it, never fewer than one record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from blackbox.seal.records import DOCUMENT_OVERHEAD, RecordError, check_reading_rows, dump_row


class ReadingRun(Protocol):
    """Readings with the consecutive seqs ``first_seq..last_seq``, made into rows on demand."""

    @property
    def first_seq(self) -> int: ...

    @property
    def last_seq(self) -> int: ...

    def rows(self) -> tuple[Sequence[Sequence[Any]], bool]:
        """The reading rows in seq order, and whether they certainly pass the sealer's check already
        (:func:`~blackbox.seal.records.reading_columns_pass`); if not, they are checked row by row."""
        ...


@dataclass(frozen=True, slots=True)
class RowsRun:
    """A :class:`ReadingRun` over rows already made."""

    readings: Sequence[Sequence[Any]]
    checked: bool = False

    @property
    def first_seq(self) -> int:
        return int(self.readings[0][0])

    @property
    def last_seq(self) -> int:
        return int(self.readings[-1][0])

    def rows(self) -> tuple[Sequence[Sequence[Any]], bool]:
        return self.readings, self.checked


@dataclass(frozen=True, slots=True)
class Document:
    """An assembled records document and what the batch header says of its records."""

    data: bytearray
    n_readings: int
    n_events: int
    first_seq: int
    last_seq: int
    first_ts_us: int
    last_ts_us: int


_SEQ, _READING_TS, _EVENT_TS = itemgetter(0), itemgetter(5), itemgetter(4)


def assemble(runs: Iterable[ReadingRun], events: Sequence[Sequence[Any]], max_bytes: int | None) -> Document:
    """The records document of the longest run of records from the first seq that fits ``max_bytes``.

    ``runs`` (iterated once: a caller may let each go once taken) and ``events`` each in ascending
    seq order and together contiguous (checked: a :class:`RecordError` says where they are not);
    the event rows already checked
    (:func:`~blackbox.seal.records.check_event_rows`), the reading rows checked here unless their run
    says they pass. A run that does not fit whole is cut at the last row that fits.
    """
    parts = _Parts(max_bytes)
    for is_event, item in _in_seq_order(runs, events):
        if not (parts.add_event(item) if is_event else parts.add_run(item)):
            break
    return parts.document()


class _Parts:
    """The JSON text of the records taken so far, and what the header says of them."""

    def __init__(self, max_bytes: int | None) -> None:
        self.room = max_bytes
        self.size = DOCUMENT_OVERHEAD
        self.events: list[bytes] = []
        self.readings = bytearray()
        """The reading rows taken, comma-separated (the document grows around them in place)."""
        self.n_readings = 0
        self.first: int | None = None
        self.next: int | None = None
        self.times: list[int] = []

    def add_event(self, row: Sequence[Any]) -> bool:
        """Take an event row if it fits; whether more may follow."""
        seq = row[0]
        self._follows(seq)
        part = dump_row(row)
        grown = self.size + len(part) + (1 if self.events else 0)
        if self.room is not None and grown > self.room and self.first is not None:
            return False
        self.events.append(part)
        self.times.append(_EVENT_TS(row))
        self._took(seq, seq, grown)
        return True

    def add_run(self, run: ReadingRun) -> bool:
        """Take a run of readings, or as many of its first rows as fit; whether more may follow."""
        rows, checked = run.rows()
        if not rows:
            raise RecordError(f"the run of readings {run.first_seq}..{run.last_seq} holds no rows")
        if not checked:
            check_reading_rows(rows)
        _consecutive(rows)
        self._follows(rows[0][0])
        part = dump_row(rows)
        comma = 1 if self.n_readings else 0
        grown = self.size + len(part) - 2 + comma
        if self.room is None or grown <= self.room:
            self._take_rows(rows, part, grown)
            return True
        k = _rows_fitting(rows, len(part) - 2, self.room - self.size - comma)
        if k == 0 and self.first is None:
            k = 1  # a record larger than the cap is sealed alone
        if k:
            part = dump_row(rows[:k])
            self._take_rows(rows[:k], part, self.size + len(part) - 2 + comma)
        return False

    def _take_rows(self, rows: Sequence[Sequence[Any]], part: bytes, grown: int) -> None:
        # copied out at once: orjson's result keeps the buffer it grew by doubling, up to 3x its length
        if self.n_readings:
            self.readings += b","
        self.readings += memoryview(part)[1:-1]
        self.n_readings += len(rows)
        self.times += (min(map(_READING_TS, rows)), max(map(_READING_TS, rows)))
        self._took(rows[0][0], rows[-1][0], grown)

    def _follows(self, first: Any) -> None:
        if self.next is not None and first != self.next:
            raise RecordError(f"records must have contiguous ascending seqs: seq {first} follows {self.next - 1}")

    def _took(self, first: int, last: int, grown: int) -> None:
        if self.first is None:
            self.first = first
        self.next, self.size = last + 1, grown

    def document(self) -> Document:
        if self.first is None or self.next is None:
            raise RecordError("cannot seal an empty batch")
        data, self.readings = self.readings, bytearray()
        data[0:0] = b'{"e":[' + b",".join(self.events) + b'],"r":['  # in place: the bytes move, no copy is made
        data += b"]}"
        if len(data) != self.size:
            raise AssertionError(f"records document assembled to {len(data)} bytes, not the {self.size} counted")
        return Document(data, self.n_readings, len(self.events), self.first, self.next - 1, min(self.times),
                        max(self.times))


def _in_seq_order(runs: Iterable[ReadingRun], events: Sequence[Sequence[Any]]) -> Iterator[tuple[bool, Any]]:
    """Events and runs merged by seq: ``(True, event row)`` or ``(False, run)``."""
    i = 0
    for run in runs:
        while i < len(events) and events[i][0] < run.first_seq:
            yield True, events[i]
            i += 1
        yield False, run
    for event in events[i:]:
        yield True, event


def _consecutive(rows: Sequence[Sequence[Any]]) -> None:
    """The rows' seqs ascend one by one (at C speed: a list compared with a range)."""
    first = rows[0][0]
    if not isinstance(first, int) or list(map(_SEQ, rows)) != list(range(first, first + len(rows))):
        raise RecordError("reading rows must have contiguous ascending seqs")


def _rows_fitting(rows: Sequence[Sequence[Any]], size: int, room: int) -> int:
    """How many of ``rows`` (from the first) fit in ``room`` bytes, commas between them included.

    ``size``: the bytes of all of them. Each row serialises to the same bytes alone as in the list,
    so the count is guessed from the mean row size, that prefix measured, and the exact end found
    by adding or removing rows one by one from there.
    """
    n = len(rows)
    if room <= 0:
        return 0
    k = max(0, min(n - 1, n * room // max(size, 1)))
    used = len(dump_row(rows[:k])) - 2 if k else 0
    while k < n:
        grown = used + len(dump_row(rows[k])) + (1 if k else 0)
        if grown > room:
            break
        used, k = grown, k + 1
    while k > 0 and used > room:
        used -= len(dump_row(rows[k - 1])) + (1 if k > 1 else 0)
        k -= 1
    return k
