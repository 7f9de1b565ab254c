"""Store-and-forward: send sealed batches in order, count them delivered only on the store's ack.

A window of at most ``max_in_flight`` batches is out at any time. A batch not acknowledged
within ``ack_timeout`` is sent again (the store treats it as the same batch); after a reconnect
every batch in the window is sent again at once. The buffer, not paho's queue, holds the backlog,
so memory stays bounded by the window however long the outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from blackbox.aio import wait_and_clear
from blackbox.buffer import Buffer, StoredBatch

log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]


class Publisher(Protocol):
    """What the forwarder needs from an MQTT session."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None: ...


@dataclass
class _InFlight:
    hash: str
    sent_at: float


class Forwarder:
    def __init__(self, buffer: Buffer, db: DbCall, topic: str, ack_timeout: float, max_in_flight: int) -> None:
        self._buffer = buffer
        self._db = db
        self._topic = topic
        self._ack_timeout = ack_timeout
        self._max_in_flight = max_in_flight
        self._in_flight: dict[int, _InFlight] = {}
        self._wake = asyncio.Event()
        self.session: Publisher | None = None
        self.delivered = 0
        self.last_delivered_seq = 0
        """Highest record sequence number known to be committed by the store."""
        self.rejections: list[str] = []
        self._delivered_event = asyncio.Event()

    def notify(self) -> None:
        """A batch was sealed or the session reconnected: look for work."""
        self._wake.set()

    def reconnected(self) -> None:
        for f in self._in_flight.values():
            f.sent_at = 0.0  # due at once
        self._wake.set()

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
            batch_seq, hash_, status = int(ack["batch_seq"]), str(ack["hash"]), str(ack["status"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.error("ignoring a malformed acknowledgement (%s): %r", exc, payload[:200])
            return
        if status not in ("stored", "duplicate"):
            reason = ack.get("reason")
            log.error("store rejected batch %d: %s; it will be re-sent after %.0f s", batch_seq, reason,
                      self._ack_timeout)
            self.rejections.append(f"{batch_seq}: {reason}")
            return
        asyncio.get_running_loop().create_task(self._delivered(batch_seq, hash_))

    async def _delivered(self, batch_seq: int, hash_: str) -> None:
        if await self._db(self._buffer.mark_delivered, batch_seq, hash_):
            self.delivered += 1
        flight = self._in_flight.get(batch_seq)
        if flight is not None and flight.hash == hash_:
            del self._in_flight[batch_seq]
        await self.refresh_delivered()
        self._wake.set()

    async def refresh_delivered(self) -> None:
        """Recompute the highest record sequence number the store has acknowledged, in order."""
        pending = await self._db(self._buffer.undelivered, 0, 1)
        if pending:
            self.last_delivered_seq = pending[0].first_seq - 1
        else:
            last = await self._db(self._buffer.last_sealed)
            self.last_delivered_seq = last.last_seq if last else 0
        self._delivered_event.set()

    async def _pump(self) -> None:
        session = self.session
        if session is None or not session.connected:
            return
        now = time.monotonic()
        for batch_seq, flight in sorted(self._in_flight.items()):
            if now - flight.sent_at >= self._ack_timeout:
                batch = await self._db(self._buffer.undelivered, batch_seq - 1, 1)
                if batch and batch[0].batch_seq == batch_seq:
                    self._send(session, batch[0], now)
                else:  # acknowledged meanwhile
                    del self._in_flight[batch_seq]
        room = self._max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        after = max(self._in_flight, default=0)
        for batch in await self._db(self._buffer.undelivered, after, room):
            self._send(session, batch, now)

    def _send(self, session: Publisher, batch: StoredBatch, now: float) -> None:
        session.publish(self._topic, batch.wire)
        self._in_flight[batch.batch_seq] = _InFlight(batch.hash, now)

    def _next_deadline(self) -> float:
        if not self._in_flight:
            return self._ack_timeout
        oldest = min(f.sent_at for f in self._in_flight.values())
        return max(0.05, oldest + self._ack_timeout - time.monotonic())
