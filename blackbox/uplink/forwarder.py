"""Store-and-forward: send sealed batches, count them delivered only on the store's ack.

A batch is done when the store's acknowledgement carrying its hash arrives (never on PUBACK).
At most ``max_in_flight`` batches are out unacknowledged at any time, in two lanes:

* **live**: the newest ``live_slots`` sealed batches go out as soon as they are sealed, whatever
  the backlog, so that fresh data keeps reaching the store while an old backlog drains;
* **replay**: everything older goes out oldest first, at most ``replay_rate`` records per second
  (a token bucket), in the rest of the window.

In steady state every batch is among the newest, so the lanes only matter after an outage. A batch
not acknowledged within ``ack_timeout`` is sent again (the store treats it as the same batch);
the wait doubles with each re-send of the same batch up to ``ack_timeout_max``, so a store that is
away is not flooded with copies. After a reconnect every unacknowledged batch is due at once —
unless paho still holds an unacknowledged copy, which paho itself re-sends on reconnect.

A batch is never sent again once its ack has arrived: it stays in the window until the buffer has
recorded the ack, and the recently acknowledged are remembered, so a look at the buffer taken just
before the ack cannot bring it back. A batch the store rejected no longer holds a place in the
window (fresh batches keep flowing past it); it is retried on its back-off, and at most
``max_in_flight`` rejected batches are kept out at once.

Memory is bounded by the window: the backlog stays in the buffer (SQLite), not here or in paho's
queue, however long the outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from blackbox.aio import wait_and_clear
from blackbox.buffer import Buffer, StoredBatch
from blackbox.config import UplinkConfig

log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]


class Sent(Protocol):
    """What a publish returns (paho's ``MQTTMessageInfo``): whether the broker has PUBACKed it."""

    def is_published(self) -> bool: ...


class Publisher(Protocol):
    """What the forwarder needs from an MQTT session."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Sent: ...


@dataclass
class _InFlight:
    hash: str
    records: int
    sent_at: float
    attempts: int
    sent: Sent | None
    acked: bool = False
    """The store's ack has arrived; the buffer is recording it."""
    rejected: bool = False
    """The store rejected the last copy: retried on its back-off, outside the window."""


@dataclass(frozen=True)
class ForwarderStats:
    in_flight: int
    delivered: int
    resent: int
    rejected: int
    last_rejection: str | None
    replay_tokens: float
    ignored_acks: int = 0
    """Rejections on our acknowledgement topic that concern no batch we have out: a batch someone
    else published on our topic (a forgery), or a copy of ours damaged beyond recognition."""


class Forwarder:
    def __init__(self, buffer: Buffer, db: DbCall, topic: str, cfg: UplinkConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._buffer = buffer
        self._db = db
        self._topic = topic
        self._cfg = cfg
        self._clock = clock
        self.live_slots = max(1, cfg.max_in_flight // 4)
        self._in_flight: dict[int, _InFlight] = {}
        self._floor = 0
        """Every batch up to this batch_seq is acknowledged (or dropped by the buffer)."""
        self._replay_after = 0
        """The replay lane has sent every batch up to this batch_seq at least once."""
        self._newest = 0
        """Highest batch_seq sealed (told by the sealer; read from the buffer at start)."""
        self._tokens = float(cfg.replay_rate)
        self._tokens_at = clock()
        self._wake = asyncio.Event()
        self.session: Publisher | None = None
        self.delivered = 0
        self.resent = 0
        self.rejected = 0
        self.ignored_acks = 0
        self.rejections: deque[str] = deque(maxlen=20)
        """The latest rejections the store reported (newest last)."""
        self.last_delivered_seq = 0
        """Highest record sequence number such that the store has committed every record up to it."""
        self._delivered_event = asyncio.Event()
        self._acks: set[asyncio.Task[None]] = set()
        self._recently_acked: deque[int] = deque(maxlen=4 * cfg.max_in_flight)
        """batch_seq of the latest batches whose ack the buffer recorded: never sent again."""
        self.on_delivered: Callable[[int, float], None] | None = None
        """Called with (batch_seq, wall-clock time the ack arrived) for each newly acknowledged batch."""

    # -- events from the agent -------------------------------------------------------------

    def notify(self, batch_seq: int | None = None) -> None:
        """Batch ``batch_seq`` was sealed: look for work."""
        if batch_seq is not None:
            self._newest = max(self._newest, batch_seq)
        self._wake.set()

    def reconnected(self) -> None:
        """The session (re)connected: every unacknowledged batch is due now."""
        for f in self._in_flight.values():
            f.sent_at = -1e9
        self._wake.set()

    def stats(self) -> ForwarderStats:
        return ForwarderStats(len(self._in_flight), self.delivered, self.resent, self.rejected,
                              self.rejections[-1] if self.rejections else None, self._tokens, self.ignored_acks)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._pump()
            await wait_and_clear(self._wake, self._next_deadline())

    async def wait_delivered(self, seq: int) -> None:
        """Return once the store has acknowledged every record up to ``seq``."""
        while self.last_delivered_seq < seq:
            self._delivered_event.clear()
            await self._delivered_event.wait()

    def on_ack(self, payload: bytes) -> None:
        """Handle one acknowledgement from the store (runs on the event loop)."""
        try:
            ack = orjson.loads(payload)
            status = ack["status"]
            if status in ("stored", "duplicate"):
                batch_seq, hash_ = int(ack["batch_seq"]), str(ack["hash"])
            elif status == "rejected":
                batch_seq = ack["batch_seq"]
            else:
                raise ValueError(f"unknown status {status!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.error("ignoring a malformed acknowledgement (%s): %r", exc, payload[:200])
            return
        if status == "rejected":
            reason = ack.get("reason")
            flight = self._in_flight.get(batch_seq) if isinstance(batch_seq, int) else None
            if flight is None or flight.hash != ack.get("hash"):
                # Not about a batch of ours that is out: anyone can publish on our batch topic, and the
                # store answers every message there. Counted, never taken for our own rejection.
                self.ignored_acks += 1
                log.debug("ignoring a rejection that is not about a batch of ours in flight: %r", payload[:300])
                return
            self.rejected += 1
            self.rejections.append(f"batch {batch_seq}: {reason}")
            flight.rejected = True
            retry = self._resend_delay(flight.attempts)
            log.error("the store rejected batch %s: %s; it stays in the buffer and is re-sent in %.0f s",
                      batch_seq, reason, retry)
            return
        task = asyncio.get_running_loop().create_task(self._delivered(batch_seq, hash_, time.time()))
        self._acks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._acks.discard)

    async def _delivered(self, batch_seq: int, hash_: str, arrived: float) -> None:
        flight = self._in_flight.get(batch_seq)
        ours = False
        if flight is not None and flight.hash == hash_:
            ours = flight.acked = True  # it stays in the window until the buffer has recorded the ack
        marked = await self._db(self._buffer.mark_delivered, batch_seq, hash_)
        if marked or ours:
            self._recently_acked.append(batch_seq)
        if ours and self._in_flight.get(batch_seq) is flight:
            del self._in_flight[batch_seq]
        if marked:
            self.delivered += 1
            if self.on_delivered is not None:
                self.on_delivered(batch_seq, arrived)
        await self.refresh_delivered()
        self._wake.set()

    async def refresh_delivered(self) -> None:
        """Recompute how far the store has everything (from the buffer: acks may be for any batch)."""
        pending = await self._db(self._buffer.first_undelivered)
        if pending is not None:
            batch_seq, first_seq = pending
            self._floor = batch_seq - 1
            self.last_delivered_seq = first_seq - 1
        else:
            last = await self._db(self._buffer.last_sealed)
            if last is not None:
                self._floor = last.batch_seq
                self.last_delivered_seq = last.last_seq
        if self._newest == 0:  # at start: what the buffer already holds
            last = await self._db(self._buffer.last_sealed)
            self._newest = last.batch_seq if last is not None else 0
        self._delivered_event.set()

    # -- sending -----------------------------------------------------------------------------

    async def _pump(self) -> None:
        session = self.session
        if session is None or not session.connected:
            return
        now = self._clock()
        self._refill(now)
        for batch_seq, flight in sorted(self._in_flight.items()):
            if flight.acked or now - flight.sent_at < self._resend_delay(flight.attempts):
                continue
            if _still_queued(flight.sent):
                continue  # paho has not even got a PUBACK for the last copy: another would only queue behind it
            batch = await self._db(self._buffer.undelivered, batch_seq - 1, 1)
            if batch and batch[0].batch_seq == batch_seq:
                self._send(session, batch[0], now, flight.attempts + 1)
                self.resent += 1
            else:  # acknowledged (or dropped by the buffer) meanwhile
                self._in_flight.pop(batch_seq, None)

        rejected = sum(1 for f in self._in_flight.values() if f.rejected)
        held = len(self._in_flight) - rejected + max(0, rejected - self._cfg.max_in_flight)
        room = self._cfg.max_in_flight - held
        if room <= 0 or self._newest <= self._floor:
            return
        live_from = max(self._floor, self._newest - self.live_slots)  # batches above it are live
        for batch in await self._db(self._buffer.undelivered, live_from, self.live_slots):
            if self._sendable(batch.batch_seq) and room > 0:
                self._send(session, batch, now, 1)
                room -= 1

        replaying = sum(1 for n, f in self._in_flight.items() if n <= live_from and not f.rejected)
        room = min(room, self._cfg.max_in_flight - self.live_slots - replaying)
        self._replay_after = max(self._replay_after, self._floor)
        if room <= 0 or self._tokens <= 0 or self._replay_after >= live_from:
            return
        for batch in await self._db(self._buffer.undelivered, self._replay_after, room):
            if batch.batch_seq > live_from or room <= 0 or self._tokens <= 0:
                break
            self._replay_after = batch.batch_seq
            if self._sendable(batch.batch_seq):  # not sent live earlier, still unacknowledged
                self._send(session, batch, now, 1)
                self._tokens -= batch.last_seq - batch.first_seq + 1
                room -= 1

    def _sendable(self, batch_seq: int) -> bool:
        """Not out already, and not acknowledged since the buffer was asked what is undelivered."""
        return batch_seq not in self._in_flight and batch_seq not in self._recently_acked

    def _send(self, session: Publisher, batch: StoredBatch, now: float, attempts: int) -> None:
        sent = session.publish(self._topic, batch.wire)
        self._in_flight[batch.batch_seq] = _InFlight(batch.hash, batch.last_seq - batch.first_seq + 1, now,
                                                     attempts, sent)

    def _refill(self, now: float) -> None:
        rate = self._cfg.replay_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)  # at most one second's worth
        self._tokens_at = now

    def _resend_delay(self, attempts: int) -> float:
        return min(self._cfg.ack_timeout * 2 ** max(attempts - 1, 0), self._cfg.ack_timeout_max)

    def _next_deadline(self) -> float:
        now = self._clock()
        deadlines = [f.sent_at + self._resend_delay(f.attempts) - now for f in self._in_flight.values()]
        if self._tokens <= 0:
            deadlines.append(-self._tokens / self._cfg.replay_rate)
        return max(0.01, min(deadlines, default=self._cfg.ack_timeout))


def _still_queued(sent: Sent | None) -> bool:
    if sent is None:
        return False
    try:
        return not sent.is_published()
    except (RuntimeError, ValueError):  # published while disconnected: paho will never report on it
        return False
