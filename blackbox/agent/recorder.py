"""One poll cycle made durable: context, rules, then one buffer transaction."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from blackbox.agent.context import ContextTracker
from blackbox.buffer import Buffer, Committed
from blackbox.model import EventDraft, Quality, Sample, now_us
from blackbox.rules import RuleEngine

DbCall = Callable[..., Awaitable[Any]]
Listener = Callable[[Committed], None]


def sanitize(sample: Sample) -> Sample:
    """A non-finite float is never stored as a value: it becomes a bad reading with the reason."""
    v = sample.value
    if isinstance(v, float) and not math.isfinite(v):
        return Sample(sample.tag, None, Quality.BAD, f"non-finite value {v}", sample.source_ts_us)
    return sample


class Recorder:
    """The single writer of the buffer: every source's cycles pass through here, one at a time.

    Serialising cycles keeps sequence numbers, context and rule state consistent across sources.
    """

    def __init__(self, buffer: Buffer, db: DbCall, tracker: ContextTracker, rules: RuleEngine) -> None:
        self._buffer = buffer
        self._db = db
        self.tracker = tracker
        self.rules = rules
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def state(self) -> dict[str, Any]:
        """What the agent must remember across restarts, saved with every commit."""
        return {"context": self.tracker.state(), "rules": self.rules.state()}

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> Committed:
        """Make one cycle durable: context events, rule events and readings in one transaction."""
        async with self._lock:
            ts = now_us()
            clean = [sanitize(s) for s in samples]
            drafts = [*events, *self.tracker.observe(clean)]
            ctx = self.tracker.context
            drafts += self.rules.evaluate(clean, ts, ctx.phase, ctx.product)
            return await self._commit(clean, drafts, ts)

    async def tick(self) -> Committed | None:
        """Let time-driven rules (stale signals, delays, shelving expiry) act without a reading."""
        async with self._lock:
            ts = now_us()
            ctx = self.tracker.context
            drafts = self.rules.tick(ts, ctx.phase, ctx.product)
            return await self._commit([], drafts, ts) if drafts else None

    async def _commit(self, samples: list[Sample], drafts: list[EventDraft], ts: int) -> Committed:
        committed: Committed = await self._db(self._buffer.commit, samples, drafts, self.tracker.context, ts,
                                              self.state())
        for listener in self._listeners:
            listener(committed)
        return committed
