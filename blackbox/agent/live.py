"""What the agent has just recorded, kept in memory for ``status``, ``tail`` and the metrics.

It listens to every commit: the last reading of each tag (for "how old is this tag's value"),
counters (readings/s, events by type), and the ``tail`` subscribers. Everything here is bounded
(one entry per configured tag, a fixed queue per subscriber) and is never part of the record.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson

from blackbox.buffer import Committed
from blackbox.columns import ReadingBlock
from blackbox.config.sources import TagConfig
from blackbox.model import Event, Reading, Value

TAIL_QUEUE = 10_000
"""Items a slow ``tail`` client may fall behind by before items are skipped (and counted)."""
STALE_AFTER_CYCLES = 3.0
"""A tag whose last reading is older than this many poll intervals (plus a second) is shown as stale."""
RATE_WINDOW_S = 10.0
MAX_PICKS = 256
"""Tag sequences whose picks a ``tail`` remembers (a few per source in practice)."""
MAX_UNREAD_BLOCKS = 256
"""Committed blocks kept for :class:`LiveView`'s last readings before they are read into its table
(one per source in practice: each commit replaces its source's previous one)."""


@dataclass(slots=True)
class LastReading:
    seq: int
    ts_us: int
    value: Value
    quality: str
    reason: str | None


class TagFilter:
    """The tags a client names: by name pattern (``fnmatch``, any of them) and by equipment unit (any
    of them); without either, every tag. The patterns are one compiled expression, so testing all
    20,000 tags of a large plant takes a few milliseconds, not one ``fnmatch`` call per tag and pattern."""

    def __init__(self, patterns: Iterable[str], units: Iterable[str]) -> None:
        self.patterns = list(patterns)
        self.units = set(units)
        self._name = re.compile("|".join(fnmatch.translate(p) for p in self.patterns)).match if self.patterns else None

    @property
    def everything(self) -> bool:
        return not self.patterns and not self.units

    def __call__(self, tag: str, unit: str | None) -> bool:
        return (self._name is None or self._name(tag) is not None) and (not self.units or unit in self.units)


class TailSubscription:
    """One ``tail`` client: what it asked for and the queue of items waiting for it."""

    def __init__(self, pick: TagFilter, with_events: bool, unit_of: dict[str, str]) -> None:
        self.pick = pick
        self.with_events = with_events
        self._unit_of = unit_of
        self._match: dict[str, bool] = {}
        self._picks: dict[int, tuple[Sequence[str], list[int]]] = {}
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(TAIL_QUEUE)
        self.skipped = 0

    def wants(self, tag: str) -> bool:
        hit = self._match.get(tag)
        if hit is None:
            hit = self._match[tag] = self.pick(tag, self._unit_of.get(tag))
        return hit

    def picks(self, tags: Sequence[str]) -> list[int]:
        """Indexes of the wanted tags in a cycle's ``tags``; remembered per tags object, since a driver
        hands the same tuple every cycle (so a commit of 1,000 readings of which none are wanted
        costs a dict lookup, not 1,000)."""
        cached = self._picks.get(id(tags))
        if cached is not None and cached[0] is tags:
            return cached[1]
        picked = [i for i, tag in enumerate(tags) if self.wants(tag)]
        if len(self._picks) >= MAX_PICKS:
            self._picks.clear()
        self._picks[id(tags)] = (tags, picked)
        return picked

    def offer(self, item: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.skipped += 1


TagRow = tuple[str, str, str, float]
"""A tag as ``status`` lists it: name, unit, engineering unit, seconds after which it is stale."""
Last = tuple[int, int, Value, str, str | None]
"""A tag's last reading: seq, time, value, quality, reason."""


class LiveView:
    def __init__(self, tags: dict[str, TagConfig], clock: Callable[[], float] = time.monotonic,
                 poll_s: dict[str, float] | None = None) -> None:
        self.set_tags(tags, poll_s)
        self._clock = clock
        self._last: dict[str, Last] = {}
        """Per tag: seq, time, value, quality, reason of its last reading (tuples: made by C-level zip),
        as of the blocks read in so far (:meth:`_read_in`)."""
        self._unread: dict[int, ReadingBlock] = {}
        """The last committed block of each tags object (keyed by its id; the block holds the object, so
        the id stays its own), in commit order: read into ``_last`` only when a last reading is asked for."""
        self.readings_total = 0
        self.events_total: Counter[str] = Counter()
        self.alarm_raised_total: Counter[str] = Counter()
        """``alarm.raised`` events by priority."""
        self._subscribers: set[TailSubscription] = set()
        self.building = asyncio.Lock()
        """Held while a ``status`` tag list is built (see :func:`tag_report`)."""
        self._rate_marks: deque[tuple[float, int]] = deque()

    def set_tags(self, tags: dict[str, TagConfig], poll_s: dict[str, float] | None = None) -> None:
        """The configured tags (again after a reload) and their poll intervals (default 1 s)."""
        self.tags = tags
        self._unit_of = {name: t.unit for name, t in tags.items()}
        self.units = frozenset(self._unit_of.values())
        poll = poll_s or {}
        self._rows: list[TagRow] = [(name, t.unit, t.eng_unit, STALE_AFTER_CYCLES * poll.get(name, 1.0) + 1.0)
                                    for name, t in tags.items()]

    def snapshot(self) -> tuple[list[TagRow], dict[str, Last]]:
        """The tags and their last readings as of now, for :func:`tag_report` to use on another thread.

        A copy of the dict (made at C speed, about a millisecond for 20,000 tags): the commits on
        the event loop go on changing the original meanwhile.
        """
        self._read_in()
        return self._rows, dict(self._last)

    # -- listening ---------------------------------------------------------------------------

    def last_reading(self, tag: str) -> LastReading | None:
        """The last reading of ``tag`` recorded since the agent started."""
        self._read_in()
        last = self._last.get(tag)
        if last is None:
            return None
        seq, ts_us, value, quality, reason = last
        return LastReading(seq, ts_us, value, str(quality), reason)

    def on_commit(self, committed: Committed) -> None:
        block = committed.readings
        n = len(block.samples)
        if n:
            # a source commits the same tags object every cycle: its new block replaces the one before,
            # which no one read (the last readings are asked for a few times a minute, committed 10 times
            # a second per source)
            key = id(block.samples.tags)
            self._unread.pop(key, None)
            self._unread[key] = block
            if len(self._unread) > MAX_UNREAD_BLOCKS:
                self._read_in()
        self.readings_total += n
        for ev in committed.events:
            self.events_total[ev.type] += 1
            if ev.type == "alarm.raised":
                self.alarm_raised_total[str(ev.data.get("priority", "unknown"))] += 1
        self._mark_rate()
        for sub in self._subscribers:
            self._feed(sub, committed)

    def _read_in(self) -> None:
        """The blocks committed since the last call into the table of last readings, oldest first."""
        for block in self._unread.values():
            s = block.samples
            n = len(s)
            self._last.update(zip(s.tags, zip(range(block.first_seq, block.first_seq + n), repeat(block.ts_us, n),
                                              s.values, s.qualities, s.reasons, strict=True), strict=True))
        self._unread.clear()

    def _feed(self, sub: TailSubscription, committed: Committed) -> None:
        if sub.with_events:
            for ev in committed.events:
                sub.offer(self._event_item(ev))
        block = committed.readings
        for i in sub.picks(block.samples.tags):
            sub.offer(self._reading_item(block[i]))

    def _reading_item(self, r: Reading) -> dict[str, Any]:
        tag = self.tags.get(r.tag)
        return {"seq": r.seq, "ts_us": r.ts_us, "tag": r.tag, "unit": tag.unit if tag else None, "value": r.value,
                "eng_unit": tag.eng_unit if tag else None, "quality": r.quality.value, "reason": r.reason,
                "source_ts_us": r.source_ts_us, "batch": r.batch, "phase": r.phase}

    @staticmethod
    def _event_item(ev: Event) -> dict[str, Any]:
        return {"seq": ev.seq, "ts_us": ev.ts_us, "event": ev.type, "subject": ev.subject, "data": ev.data,
                "batch": ev.batch, "phase": ev.phase}

    # -- rates -------------------------------------------------------------------------------

    def _mark_rate(self) -> None:
        """Remember when each commit happened and the running total after it (the rate's samples)."""
        now = self._clock()
        marks = self._rate_marks
        marks.append((now, self.readings_total))
        while len(marks) > 2 and now - marks[1][0] > RATE_WINDOW_S:
            marks.popleft()

    def readings_per_second(self) -> float:
        """Readings committed per second over about the last ten seconds.

        Measured from the first to the last commit in the window, so that it counts whole cycles:
        measuring up to *now* would leave out the readings of the cycle in progress (up to one
        cycle's worth low). Commits that stopped longer ago than the window give 0.
        """
        marks = self._rate_marks
        if len(marks) < 2 or self._clock() - marks[-1][0] > RATE_WINDOW_S:
            return 0.0
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    # -- tail --------------------------------------------------------------------------------

    def subscribe(self, pick: TagFilter, with_events: bool) -> TailSubscription:
        sub = TailSubscription(pick, with_events, self._unit_of)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: TailSubscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """The agent is stopping: every ``tail`` ends."""
        for sub in self._subscribers:
            if sub.queue.full():
                sub.queue.get_nowait()  # make room for the end marker
            sub.queue.put_nowait(None)
        self._subscribers.clear()


@dataclass(frozen=True, slots=True)
class TagReport:
    """The ``tags`` list of ``status`` as JSON, and how many tags are in each state."""

    json: bytes
    counts: dict[str, int]
    """``configured``; of the tags the filter picks (``matching``): ``stale`` (``never_read`` among
    them), ``bad``, ``uncertain``, ``attention`` (stale or not good); and ``listed`` (in ``json``)."""


def tag_report(rows: list[TagRow], last: dict[str, Last], now_us: int, pick: TagFilter | None = None,
               attention_only: bool = False, limit: int | None = None, indented: bool = False) -> TagReport:
    """The tags ``pick`` names (every tag without it), from a :meth:`LiveView.snapshot`: safe on any thread.

    Only the tags listed become dicts (the costly part at 20,000 tags); every picked tag is counted.
    ``attention_only`` lists the stale tags and those of a quality other than good; ``limit`` lists
    at most that many (the counts still cover every picked tag). ``indented``: the JSON is written
    as the value of a key of a document indented by two spaces a level (``status --json``).
    """
    out: list[dict[str, Any]] = []
    add = out.append
    get = last.get
    room = len(rows) if limit is None else limit
    matching = stale = never_read = bad = uncertain = attention = 0
    for name, unit, eng_unit, stale_after in rows:
        if pick is not None and not pick(name, unit):
            continue
        matching += 1
        r = get(name)
        if r is None:
            stale += 1
            never_read += 1
            attention += 1
            if room > len(out):
                add({"tag": name, "unit": unit, "eng_unit": eng_unit, "age_s": None, "stale": True, "value": None,
                     "quality": None, "reason": None})
            continue
        age = max(0.0, (now_us - r[1]) / 1e6)
        is_stale = age > stale_after
        quality = r[3]
        if is_stale:
            stale += 1
        if quality != "good":
            bad += quality == "bad"
            uncertain += quality == "uncertain"
        needs = is_stale or quality != "good"
        attention += needs
        if (needs or not attention_only) and room > len(out):
            add({"tag": name, "unit": unit, "eng_unit": eng_unit, "age_s": age, "stale": is_stale,
                 "value": r[2], "quality": str(quality), "reason": r[4]})
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  ") if indented else orjson.dumps(out)
    return TagReport(text, {
        "configured": len(rows), "matching": matching, "stale": stale, "never_read": never_read, "bad": bad,
        "uncertain": uncertain, "attention": attention, "listed": len(out)})
