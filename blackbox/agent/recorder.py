"""One poll cycle made durable: context, rules, then one buffer transaction.

The recorder is also where the buffer's space is kept: after a commit that leaves the buffer
above its high-water mark, delivered data is pruned and, only if that is not enough, the oldest
undelivered data is dropped with a ``buffer.gap`` event and a critical alarm. A full disk is met
the same way, with the file's present size as the quota until the disk has room again.

A cycle whose commit fails is never half-recorded: its events (context changes, alarms, clock
jumps) wait in memory and go into the next commit that succeeds, so the context and rule state
can never run ahead of the record; its readings, which were never given sequence numbers, are
counted and recorded as a ``buffer.gap`` (with their time range) as soon as the buffer takes
writes again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import orjson

from blackbox.agent.batch_record import BatchRecord
from blackbox.agent.clock import GatewayClock
from blackbox.agent.context import ContextTracker
from blackbox.agent.system_alarms import SystemAlarms
from blackbox.buffer import Buffer, BufferError, BufferFull, Committed, DbCall
from blackbox.buffer.repository import RESERVE_BYTES
from blackbox.columns import SampleColumns
from blackbox.model import EventDraft, Quality, Sample, Value
from blackbox.rules import RuleEngine
from blackbox.seal.records import INT_MAX, INT_MIN

log = logging.getLogger(__name__)

Listener = Callable[[Committed], None]
Change = Callable[[ContextTracker], list[EventDraft]]

HIGH_WATER = 0.90
"""Above this share of the quota, room is made…"""
LOW_WATER = 0.75
"""…down to this share."""
PRUNE_CHUNK = 100_000
"""Records deleted per transaction when pruning, so that no single commit waits long."""
MAX_DROP_ROUNDS = 5
MIN_DROP_FRACTION = 0.02
MAX_PENDING_EVENTS = 10_000
"""Events kept in memory while the buffer refuses writes; beyond this they are counted as lost."""
DISK_ROOM_TO_RESUME = 2 * RESERVE_BYTES
"""Free disk needed before a buffer held at its size (disk full) may grow again."""


def _plain(values: Sequence[Value], reasons: Sequence[str | None]) -> bool:
    """Whether every value and reason can be sealed as it is (the usual case, checked at C speed)."""
    numbers = cast("Sequence[float]", values)  # tried as numbers, one C-level pass: a str or None raises
    try:
        if not all(map(math.isfinite, numbers)):
            return False
        numbers_only = True
    except (TypeError, OverflowError):  # strings, None, huge ints: look closer
        numbers_only = False
    in_range = numbers_only and (not numbers or (min(numbers) >= INT_MIN and max(numbers) <= INT_MAX))
    if not in_range and any(_unsealable(v) for v in values):  # a large float merely takes this closer look
        return False
    if reasons.count(None) == len(reasons):  # no reasons at all: the usual case, at C speed
        return True
    return "\x00" not in "".join(r for r in reasons if r is not None)


def _unsealable(value: Value) -> str | None:
    """Why a value cannot go into a sealed batch as it is (docs/batch-format.md), or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite value {value}"
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return f"integer {str(value)[:40]} is outside the range a batch holds (-2**63 .. 2**64-1)"
    if isinstance(value, str) and "\x00" in value:
        return "text value holds a NUL character (U+0000), which a batch cannot hold"
    return None


def sanitize(samples: Sequence[Sample]) -> SampleColumns:
    """What a batch cannot hold is never stored as a value: a non-finite float, an integer beyond
    -2**63 .. 2**64-1 or a text with a NUL character becomes a bad reading with the reason (and a NUL
    in a reason is written ``\\x00``), so the sealer never meets a record it must refuse."""
    columns = SampleColumns.of(samples)
    if _plain(columns.values, columns.reasons):
        return columns
    values, qualities, reasons = list(columns.values), list(columns.qualities), list(columns.reasons)
    for i, v in enumerate(values):
        why = _unsealable(v)
        if why is not None:
            values[i], qualities[i], reasons[i] = None, Quality.BAD, why
        elif (reason := reasons[i]) is not None and "\x00" in reason:
            reasons[i] = reason.replace("\x00", "\\x00")
    return SampleColumns(columns.tags, values, qualities, reasons, columns.source_ts_us)


def sealable_event(draft: EventDraft) -> EventDraft:
    """``draft`` with any NUL character in its text (a driver's error message, say) spelled ``\\x00``.

    A sealed batch cannot hold NUL (docs/batch-format.md): the sealer would refuse the batch and
    nothing after it could be sealed. Events are few per cycle; orjson finds the rare NUL at C speed.
    """
    try:
        if b"\\u0000" not in orjson.dumps(draft.data) and "\x00" not in (draft.subject or ""):
            return draft
    except orjson.JSONEncodeError:
        return draft  # not JSON at all: the buffer refuses it with the reason
    return replace(draft, subject=_spell_nul(draft.subject), data=_spell_nul(draft.data))


def _spell_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {_spell_nul(k): _spell_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spell_nul(v) for v in value]
    return value


@dataclass
class _Lost:
    """Readings and events that could not be made durable, until the gap is recorded."""

    readings: int
    events: int
    from_us: int
    to_us: int
    reason: str


class Recorder:
    """The single writer of the buffer: every source's cycles pass through here, one at a time.

    Serialising cycles keeps sequence numbers, context and rule state consistent across sources.
    """

    def __init__(self, buffer: Buffer, db: DbCall, tracker: ContextTracker, rules: RuleEngine,
                 clock: GatewayClock, alarms: SystemAlarms, retention_s: float = 86_400.0) -> None:
        self._buffer = buffer
        self._db = db
        self.tracker = tracker
        self.rules = rules
        self.clock = clock
        self.alarms = alarms
        rules.attach(alarms.alarms())
        self.retention_s = retention_s
        self.spec_state: dict[str, Any] = {}
        """The approved specifications in force (:meth:`blackbox.spec.enforce.InForce.state`)."""
        self.record_keeper = BatchRecord()
        """Weighings to verify, QC, deviations, cleaning and lots (:mod:`blackbox.agent.batch_record`)."""
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._pending: list[EventDraft] = []
        self._lost: _Lost | None = None
        self.failed_commits = 0
        self.dropped_records = 0
        self.last_error: str | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def state(self) -> dict[str, Any]:
        """What the agent must remember across restarts, saved with every commit.

        The rules' state is not in it: it is saved as rows, only those that changed
        (:meth:`blackbox.rules.RuleEngine.state_rows`), in the same transaction.
        """
        return {"context": self.tracker.state(),
                "clock": {"issued_us": self.clock.issued_us}, "alarms": self.alarms.state(), "spec": self.spec_state,
                "record": self.record_keeper.state()}

    # -- writing -----------------------------------------------------------------------------

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> Committed | None:
        """Make one cycle durable: context events, rule events and readings in one transaction.

        Returns ``None`` if the buffer refused the write (it is logged, and accounted as above).
        """
        async with self._lock:
            ts, jump = self.clock.now()
            clean = sanitize(samples)
            drafts = [*([jump] if jump else []), *events, *self.tracker.observe(clean)]
            ctx = self.tracker.context
            drafts += self.record_keeper.observe(drafts, ctx, ts)
            drafts += self.rules.observe_events(drafts, ts, ctx.phase, ctx.product)
            drafts += self.rules.evaluate(clean, ts, ctx.phase, ctx.product)
            return await self._commit_or_keep(clean, drafts, ts)

    async def commit(self, samples: Sequence[Sample] = (), events: Sequence[EventDraft] = (),
                     change: Change | None = None) -> Committed:
        """Record ``events`` (and ``change``'s, applied to the context) now, or raise.

        For commands that must answer whether they were recorded (operator entries, key
        rotation): on :class:`BufferError` the context change is undone and nothing is kept.
        :class:`~blackbox.agent.context.ContextError` from ``change`` leaves everything as it was.
        """
        async with self._lock:
            saved, saved_record = self.tracker.state(), self.record_keeper.snapshot()
            drafts = [*(change(self.tracker) if change else []), *events]
            ts, jump = self.clock.now()
            drafts += self.record_keeper.observe(drafts, self.tracker.context, ts)
            drafts += self.rules.observe_events(drafts, ts, self.tracker.context.phase, self.tracker.context.product)
            try:
                return await self._commit(sanitize(samples), [*([jump] if jump else []), *drafts], ts)
            except BufferError:
                self.tracker.restore(saved)
                self.record_keeper.restore(saved_record)
                if jump:
                    self._keep([jump])
                raise

    async def reconfigure(self, tracker: ContextTracker, rules: RuleEngine, events: Sequence[EventDraft]) -> None:
        """Swap in a new configuration's context tracker and rules, and record ``events`` with it."""
        async with self._lock:
            rules.attach(self.alarms.alarms())
            self.tracker, self.rules = tracker, rules
            ts, jump = self.clock.now()
            await self._commit_or_keep([], [*([jump] if jump else []), *events], ts)

    async def tick(self) -> Committed | None:
        """Let time act without a reading: time-driven rules, alarm clearing, clock checks, retries."""
        async with self._lock:
            ts, jump = self.clock.now()
            ctx = self.tracker.context
            drafts = [*([jump] if jump else []), *self.rules.tick(ts, ctx.phase, ctx.product), *self.alarms.tick(ts)]
            if not drafts and not self._pending and self._lost is None:
                return None
            return await self._commit_or_keep([], drafts, ts)

    async def maintain(self) -> None:
        """Housekeeping (every minute or so): retention, the disk reserve, a held size released."""
        cutoff = self.clock.issued_us - int(self.retention_s * 1_000_000)
        pruned = 0
        while n := await self._db(self._buffer.prune_delivered, cutoff, PRUNE_CHUNK):
            pruned += n
        if pruned:
            log.info("retention: pruned %d delivered records older than %.1f h", pruned, self.retention_s / 3600)
        if self._buffer.size_held:
            await self._release_held_size()
        if not await self._db(self._buffer.ensure_reserve):
            log.warning("no room on disk for the buffer's %d MB reserve", RESERVE_BYTES >> 20)

    # -- internals ---------------------------------------------------------------------------

    async def _commit_or_keep(self, samples: Sequence[Sample], drafts: list[EventDraft], ts: int) -> Committed | None:
        drafts = [sealable_event(d) for d in drafts]
        try:
            return await self._commit(samples, drafts, ts)
        except BufferError as exc:
            self._keep(drafts)
            self._note_lost(len(samples), ts, exc)
            return None

    async def _commit(self, samples: Sequence[Sample], drafts: list[EventDraft], ts: int) -> Committed:
        """Commit with what waited from failed cycles first; make room once if the buffer is full."""
        try:
            committed = await self._write_waiting(samples, drafts, ts)
        except BufferFull as full:
            log.warning("%s; making room", full)
            await self._make_room(full.reason, ts)
            committed = await self._write_waiting(samples, drafts, ts)
        self._pending = []
        self._lost = None
        quota = self._buffer.quota_bytes
        if quota is not None and committed.used_bytes > HIGH_WATER * quota:
            try:
                await self._make_room("disk full" if self._buffer.size_held else "quota", ts)
            except BufferError as exc:  # the cycle is committed; the next one tries again
                log.error("could not make room in the buffer: %s", exc)
        return committed

    async def _write_waiting(self, samples: Sequence[Sample], drafts: list[EventDraft], ts: int) -> Committed:
        """Write with the events that waited, and the account of lost readings, in front."""
        alarms_before = self.alarms.state()
        try:
            return await self._write(samples, [*self._pending, *self._lost_gap(ts), *drafts], ts)
        except BufferError:
            self.alarms.restore(alarms_before)  # an alarm raised with the lost-readings gap was not recorded
            raise

    async def _write(self, samples: Sequence[Sample], drafts: list[EventDraft], ts: int) -> Committed:
        rules, rows = self.rules, self.rules.state_rows()
        try:
            committed: Committed = await self._db(self._buffer.commit, samples, drafts, self.tracker.context, ts,
                                                  self.state(), rows)
        except BaseException:
            rules.state_unsaved(rows)
            raise
        rules.state_saved(rows)
        self._committed(committed)
        return committed

    def _committed(self, committed: Committed) -> None:
        if self.last_error is not None:
            log.warning("the buffer takes writes again")
            self.last_error = None
        for listener in self._listeners:
            listener(committed)

    async def _make_room(self, reason: str, ts: int) -> None:
        """Prune delivered data, then drop the oldest undelivered, until below the low-water mark."""
        if reason == "disk full":
            if self._buffer.size_held and await self._release_held_size():
                return  # the disk has room again: the quota is the configured one again
            await self._hold_size()
        usage = await self._db(self._buffer.usage)
        if usage.quota_bytes is None:
            return
        target = LOW_WATER * usage.quota_bytes
        while usage.used_bytes > target and await self._db(self._buffer.prune_delivered, None, PRUNE_CHUNK) > 0:
            usage = await self._db(self._buffer.usage)
        for _ in range(MAX_DROP_ROUNDS):
            if usage.used_bytes <= target:
                return
            fraction = max(MIN_DROP_FRACTION, (usage.used_bytes - target) / usage.used_bytes)
            saved = self.alarms.state()
            alarm = self.alarms.data_loss(reason, ts, {
                "message": f"the buffer dropped undelivered records to make room ({reason})"})
            rules, rows = self.rules, self.rules.state_rows()
            try:
                result = await self._db(self._buffer.drop_undelivered, fraction, reason, self.tracker.context, ts,
                                        alarm, self.state(), frozenset(self.alarms.rules()), rows)
            except BaseException:
                rules.state_unsaved(rows)
                self.alarms.restore(saved)
                raise
            if result is None:
                rules.state_unsaved(rows)
                self.alarms.restore(saved)
                log.error("the buffer is full (%s) and holds nothing undelivered that could be dropped", reason)
                return
            rules.state_saved(rows)
            committed, dropped = result
            self.dropped_records += dropped.readings + dropped.events
            log.error("buffer full (%s): dropped undelivered records %d..%d (%d readings, %d events, %d sealed "
                      "batches); recorded as buffer.gap", reason, dropped.first_seq, dropped.last_seq,
                      dropped.readings, dropped.events, dropped.batches)
            self._committed(committed)
            usage = await self._db(self._buffer.usage)

    async def _release_held_size(self) -> bool:
        """Let the buffer grow again if the disk has room; whether it did."""
        free = await self._db(self._buffer.disk_free_bytes)
        if free < DISK_ROOM_TO_RESUME:
            return False
        await self._db(self._buffer.release_size)
        log.warning("the disk has room again (%d MB free): the buffer may grow up to its quota", free >> 20)
        return True

    async def _hold_size(self) -> None:
        """Disk full: free the reserve, checkpoint the WAL into the file, and keep the file's size."""
        await self._db(self._buffer.release_reserve)
        try:
            await self._db(self._buffer.checkpoint)
        except BufferError as exc:
            log.warning("WAL checkpoint on a full disk failed: %s", exc)
        if not self._buffer.size_held:
            held = await self._db(self._buffer.hold_size)
            log.error("disk full: the buffer keeps to its present %.1f MB until the disk has room again", held / 2**20)

    def _keep(self, drafts: list[EventDraft]) -> None:
        """Events of a failed commit wait for the next one (bounded; the excess is counted as lost)."""
        self._pending = [*self._pending, *drafts]
        excess = len(self._pending) - MAX_PENDING_EVENTS
        if excess > 0:
            self._pending = self._pending[excess:]
            self._note_events_lost(excess)

    def _note_lost(self, n_readings: int, ts: int, exc: BufferError) -> None:
        if self.last_error is None:  # once per run of failures; the log may share the full disk
            log.error("the buffer refuses writes (%s): readings are counted as lost and events kept until it "
                      "takes writes again", exc)
        self.failed_commits += 1
        self.last_error = str(exc)
        if n_readings == 0:
            return
        reason = exc.reason if isinstance(exc, BufferFull) else "write failed"
        if self._lost is None:
            self._lost = _Lost(n_readings, 0, ts, ts, reason)
        else:
            self._lost.readings += n_readings
            self._lost.to_us = ts

    def _note_events_lost(self, n: int) -> None:
        ts = self.clock.issued_us
        if self._lost is None:
            self._lost = _Lost(0, n, ts, ts, "write failed")
        else:
            self._lost.events += n

    def _lost_gap(self, ts: int) -> list[EventDraft]:
        lost = self._lost
        if lost is None:
            return []
        gap = EventDraft("buffer.gap", "buffer", {
            "first_seq": None, "last_seq": None, "from_us": lost.from_us, "to_us": lost.to_us,
            "reason": f"not recorded: {lost.reason}", "readings": lost.readings, "events": lost.events,
            "batches": 0})
        return [gap, *self.alarms.data_loss(lost.reason, ts, {
            "message": f"{lost.readings} readings could not be recorded ({lost.reason})"})]
