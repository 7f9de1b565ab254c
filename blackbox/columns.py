"""One cycle's samples and readings as columns: the agent's hot path without an object per value.

A 2,000-tag poll cycle made of 2,000 :class:`~blackbox.model.Sample` objects, then 2,000
:class:`~blackbox.model.Reading` objects and 2,000 buffer rows, cost more agent CPU than reading
the values off the wire. Carried as columns instead (the tag names are the same tuple every
cycle), the driver fills one list of values, the buffer stores the cycle as one block, and the
sealer builds the batch's rows from the columns with C-level ``zip``.

Both classes are also read-only sequences of the objects they stand for, built on demand, so code
that only looks at a few values (rules, tests, ``tail``) keeps using ``Sample`` and ``Reading``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import overload

from blackbox.model import Quality, Reading, Sample, Value

GOOD = Quality.GOOD


@dataclass(slots=True, eq=False)
class SampleColumns(Sequence[Sample]):
    """Samples of one cycle, one list per field, all of the same length."""

    tags: Sequence[str]
    values: Sequence[Value]
    qualities: Sequence[Quality]
    reasons: Sequence[str | None]
    source_ts_us: Sequence[int | None]

    def __post_init__(self) -> None:
        n = len(self.tags)
        if not len(self.values) == len(self.qualities) == len(self.reasons) == len(self.source_ts_us) == n:
            raise ValueError(f"sample columns differ in length: {len(self.tags)} tags, {len(self.values)} values, "
                             f"{len(self.qualities)} qualities, {len(self.reasons)} reasons, "
                             f"{len(self.source_ts_us)} source times")

    @classmethod
    def good(cls, tags: Sequence[str], values: Sequence[Value]) -> SampleColumns:
        """Good samples without reason or source timestamp."""
        n = len(tags)
        return cls(tags, values, [GOOD] * n, [None] * n, [None] * n)

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> SampleColumns:
        """``samples`` as columns (themselves if they already are)."""
        if isinstance(samples, SampleColumns):
            return samples
        rows = samples if isinstance(samples, Sequence) else list(samples)
        return cls([s.tag for s in rows], [s.value for s in rows], [s.quality for s in rows],
                   [s.reason for s in rows], [s.source_ts_us for s in rows])

    def pick(self, indices: Sequence[int]) -> SampleColumns:
        """The samples at ``indices``, in that order."""
        return SampleColumns([self.tags[i] for i in indices], [self.values[i] for i in indices],
                             [self.qualities[i] for i in indices], [self.reasons[i] for i in indices],
                             [self.source_ts_us[i] for i in indices])

    def __len__(self) -> int:
        return len(self.tags)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> SampleColumns: ...

    def __getitem__(self, index: int | slice) -> Sample | SampleColumns:
        if isinstance(index, slice):
            return SampleColumns(self.tags[index], self.values[index], self.qualities[index],
                                 self.reasons[index], self.source_ts_us[index])
        return Sample(self.tags[index], self.values[index], self.qualities[index], self.reasons[index],
                      self.source_ts_us[index])

    def __iter__(self) -> Iterator[Sample]:
        return map(Sample, self.tags, self.values, self.qualities, self.reasons, self.source_ts_us)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable columns

    def __repr__(self) -> str:
        return f"SampleColumns({list(self)!r})"


@dataclass(slots=True, eq=False)
class ReadingBlock(Sequence[Reading]):
    """The readings of one commit: consecutive sequence numbers from ``first_seq``, one time and context."""

    first_seq: int
    ts_us: int
    batch: str | None
    phase: str | None
    samples: SampleColumns

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.samples) - 1

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> Reading: ...

    @overload
    def __getitem__(self, index: slice) -> list[Reading]: ...

    def __getitem__(self, index: int | slice) -> Reading | list[Reading]:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self.samples)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("reading index out of range")
        s = self.samples
        return Reading(self.first_seq + index, s.tags[index], s.values[index], s.qualities[index], s.reasons[index],
                       self.ts_us, s.source_ts_us[index], self.batch, self.phase)

    def __iter__(self) -> Iterator[Reading]:
        s = self.samples
        n = len(s)
        return map(Reading, range(self.first_seq, self.first_seq + n), s.tags, s.values, s.qualities, s.reasons,
                   repeat(self.ts_us, n), s.source_ts_us, repeat(self.batch, n), repeat(self.phase, n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReadingBlock({list(self)!r})"


class TagPicker:
    """Picks the samples of a few tags out of each cycle, without touching the others.

    For :class:`SampleColumns` the positions of the wanted tags are found once per tag tuple (a
    polling driver hands the same tuple every cycle) and remembered; other sequences are scanned.
    """

    _CACHED = 64
    """Tag tuples remembered (one per source, in practice)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._positions: dict[int, tuple[Sequence[str], list[int]]] = {}

    def __call__(self, samples: Sequence[Sample]) -> list[Sample]:
        """The samples of the wanted tags, in cycle order."""
        if not self.names:
            return []
        if isinstance(samples, SampleColumns):
            return [samples[i] for i in self._positions_in(samples.tags)]
        names = self.names
        return [s for s in samples if s.tag in names]

    def _positions_in(self, tags: Sequence[str]) -> list[int]:
        names = self.names
        if type(tags) is not tuple:  # a one-off list (a filtered cycle): nothing to remember
            return [i for i, tag in enumerate(tags) if tag in names]
        known = self._positions.get(id(tags))
        if known is not None and known[0] is tags:  # the entry holds the tuple, so its id is not reused
            return known[1]
        if len(self._positions) >= self._CACHED:
            self._positions.clear()
        found = [i for i, tag in enumerate(tags) if tag in names]
        self._positions[id(tags)] = (tags, found)
        return found
