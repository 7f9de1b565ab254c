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

**Acknowledgements are signed receipts** (:mod:`blackbox.tlog.receipt`). A batch counts as delivered
only when the store's receipt for it verifies with the store key pinned in ``uplink.store_key``:
signature, this gateway, this batch's hash, and the inclusion proof of the batch's entry in the
signed tree head. The receipt is kept in the buffer (``blackbox receipts``). A receipt that does
not verify changes nothing (the batch stays and is sent again), is counted and raises the
``uplink.bad_receipt`` alarm; an acknowledgement about a batch this gateway did not seal, or
already has a receipt for, is only counted (``ignored_acks``). Without a pinned key nothing is
ever counted delivered. The tree heads are checked for consistency by :class:`LogWatch`: a store
log that was truncated or rewritten raises ``uplink.log_inconsistent``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from blackbox.aio import wait_and_clear
from blackbox.buffer import Buffer, DbCall, StoredBatch
from blackbox.config.uplink import UplinkConfig
from blackbox.tlog.note import NoteError, open_checkpoint, parse_vkey
from blackbox.tlog.receipt import ReceiptError, VerifiedAck, verify_ack
from blackbox.topics import GatewayTopics
from blackbox.uplink.logwatch import LogWatch

log = logging.getLogger(__name__)



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


BAD_RECEIPT = "uplink.bad_receipt"
LOG_INCONSISTENT = "uplink.log_inconsistent"
CHECKPOINT_KEY = "store_checkpoint"
"""Buffer meta key of the latest store checkpoint this gateway has proven consistent."""


@dataclass(frozen=True)
class ForwarderStats:
    in_flight: int
    delivered: int
    resent: int
    rejected: int
    last_rejection: str | None
    replay_tokens: float
    ignored_acks: int = 0
    """Acknowledgements that concern no batch of ours awaiting a receipt: about a batch someone else
    published on our topic (a forgery), a copy of ours damaged beyond recognition, or a replay."""
    bad_receipts: int = 0
    last_bad_receipt: str | None = None
    log_inconsistent: int = 0
    store_tree_size: int | None = None


class Forwarder:
    def __init__(self, buffer: Buffer, db: DbCall, topics: GatewayTopics, cfg: UplinkConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._buffer = buffer
        self._db = db
        self._topic = topics.batches
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
        self.on_alarm: Callable[[str, str], None] | None = None
        """Called with (alarm rule, reason) for a receipt that does not verify or an inconsistent store log."""
        self._site, self._gateway = topics.site, topics.gateway
        self._proofs_topic = topics.proofs
        self._verifier = parse_vkey(cfg.store_key) if cfg.store_key else None
        if self._verifier is None:
            log.error("uplink.store_key is not set: the store's receipts cannot be verified, so no batch will be "
                      "counted delivered (nor pruned); pin the key `blackbox store keys show` prints")
        self.bad_receipts = 0
        self.last_bad_receipt: str | None = None
        self.watch: LogWatch | None = None
        self._asked_at: float | None = None
        self._inconsistencies_alarmed = 0

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
        latest = self.watch.latest if self.watch is not None else None
        return ForwarderStats(len(self._in_flight), self.delivered, self.resent, self.rejected,
                              self.rejections[-1] if self.rejections else None, self._tokens, self.ignored_acks,
                              self.bad_receipts, self.last_bad_receipt,
                              self.watch.inconsistent if self.watch is not None else 0,
                              latest[0].size if latest is not None else None)

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
        """Handle one message from the acknowledgement topic (runs on the event loop)."""
        try:
            doc = orjson.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except (orjson.JSONDecodeError, ValueError) as exc:
            self._ignore(f"not an acknowledgement ({exc}): {payload[:100]!r}")
            return
        task = asyncio.get_running_loop().create_task(self._acknowledged(doc, time.time()))
        self._acks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._acks.discard)

    def _ignore(self, why: str) -> None:
        self.ignored_acks += 1
        log.debug("ignoring a message on the acknowledgement topic: %s", why)

    async def _acknowledged(self, doc: dict[str, Any], arrived: float) -> None:
        if self.watch is None:
            self.watch = await self._load_watch()
        if doc.get("type") == "consistency":
            await self._consistency(doc)
            return
        batch_seq, hash_ = doc.get("batch_seq"), doc.get("hash")
        if not isinstance(batch_seq, int) or not isinstance(hash_, str):
            self._ignore(f"no batch_seq and hash: {str(doc)[:100]}")
            return
        batch = await self._db(self._buffer.sealed_batch, batch_seq)
        if batch is None or batch.hash != hash_ or batch.delivered:
            self._ignore(f"batch {batch_seq} {hash_[:16]} is not a batch of ours awaiting a receipt")
            flight = self._in_flight.get(batch_seq)
            if batch is not None and batch.delivered and flight is not None and flight.hash == batch.hash:
                del self._in_flight[batch_seq]  # a copy sent while its receipt was on its way: nothing to wait for
                self._wake.set()
            return
        if self._verifier is None:
            self._bad_receipt(batch_seq, "no store key is pinned (uplink.store_key)", alarm=False)
            return
        try:
            ack = verify_ack(doc, self._verifier, self._site, self._gateway)
        except ReceiptError as exc:
            self._bad_receipt(batch_seq, str(exc))
            return
        if ack.receipt.status == "rejected":
            self._rejected(batch_seq, ack.receipt.reason)
            return
        await self._delivered(ack, arrived)

    def _bad_receipt(self, batch_seq: int, problem: str, *, alarm: bool = True) -> None:
        self.bad_receipts += 1
        self.last_bad_receipt = f"batch {batch_seq}: {problem}"
        log.warning("refused an acknowledgement of batch %s: %s; the batch stays in the buffer", batch_seq, problem)
        if alarm and self.on_alarm is not None:
            self.on_alarm(BAD_RECEIPT, f"refused a receipt for batch {batch_seq}: {problem}")

    def _rejected(self, batch_seq: int, reason: str | None) -> None:
        self.rejected += 1
        self.rejections.append(f"batch {batch_seq}: {reason}")
        flight = self._in_flight.get(batch_seq)
        if flight is not None:
            flight.rejected = True
        retry = self._resend_delay(flight.attempts) if flight else self._cfg.ack_timeout
        log.error("the store rejected batch %s: %s; it stays in the buffer and is re-sent in %.0f s",
                  batch_seq, reason, retry)

    async def _delivered(self, ack: VerifiedAck, arrived: float) -> None:
        r = ack.receipt
        flight = self._in_flight.get(r.batch_seq)
        ours = False
        if flight is not None and flight.hash == r.hash:
            ours = flight.acked = True  # it stays in the window until the buffer has recorded the ack
        row = {"status": r.status, "log_index": r.index, "tree_size": r.tree_size, "received_at_us": r.received_at_us,
               "receipt": ack.receipt_note, "checkpoint": ack.checkpoint_note,
               "inclusion": orjson.dumps([base64.b64encode(h).decode() for h in ack.inclusion]).decode()}
        marked = await self._db(self._buffer.mark_delivered, r.batch_seq, r.hash, row)
        if marked or ours:
            self._recently_acked.append(r.batch_seq)
        if ours and self._in_flight.get(r.batch_seq) is flight:
            del self._in_flight[r.batch_seq]
        if marked:
            self.delivered += 1
            if self.on_delivered is not None:
                self.on_delivered(r.batch_seq, arrived)
        if self.watch is None:
            raise RuntimeError("internal error: expected self.watch is not None")
        adopted = self.watch.seen(ack.checkpoint, ack.checkpoint_note)
        if adopted is not None:
            await self._db(self._buffer.set_meta_value, CHECKPOINT_KEY, adopted[1])
        self._check_watch()
        self._ask()
        await self.refresh_delivered()
        self._wake.set()

    async def _load_watch(self) -> LogWatch:
        note = await self._db(self._buffer.meta_value, CHECKPOINT_KEY)
        if note is None or self._verifier is None:
            return LogWatch()
        try:
            return LogWatch((open_checkpoint(note, self._verifier), note))
        except NoteError as exc:  # the store key was changed: start over from the next tree head
            log.warning("the kept store checkpoint does not verify with the pinned store key (%s); starting over", exc)
            return LogWatch()

    async def _consistency(self, doc: dict[str, Any]) -> None:
        if self.watch is None:
            raise RuntimeError("internal error: expected self.watch is not None")
        adopted = self.watch.answer(doc)
        self._asked_at = None
        if adopted is not None:
            await self._db(self._buffer.set_meta_value, CHECKPOINT_KEY, adopted[1])
        self._check_watch()
        self._ask()

    def _check_watch(self) -> None:
        """Alarm on a new inconsistency found by the log watch."""
        if self.watch is None:
            raise RuntimeError("internal error: expected self.watch is not None")
        if self.watch.inconsistent > self._inconsistencies_alarmed:
            self._inconsistencies_alarmed = self.watch.inconsistent
            problem = self.watch.last_problem or "inconsistent tree heads"
            log.error("the store's transparency log is not consistent with what this gateway saw: %s", problem)
            if self.on_alarm is not None:
                self.on_alarm(LOG_INCONSISTENT, problem)

    def _ask(self) -> None:
        """Ask the store for the next consistency proof the log watch needs."""
        session = self.session
        if self.watch is None or session is None or not session.connected:
            return
        request = self.watch.next_request()
        if request is not None:
            session.publish(self._proofs_topic, orjson.dumps(request.message()))
            self._asked_at = self._clock()

    async def refresh_delivered(self) -> None:
        """Recompute how far the store has everything (from the buffer: acks may be for any batch)."""
        if self.watch is None:  # at start: the store tree head this gateway kept
            self.watch = await self._load_watch()
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
        if self._asked_at is not None and now - self._asked_at > self._cfg.ack_timeout and self.watch is not None:
            self.watch.retry()  # the proof never came: ask again
            self._asked_at = None
            self._ask()
        for batch_seq, flight in sorted(self._in_flight.items()):
            if flight.acked or now - flight.sent_at < self._resend_delay(flight.attempts):
                continue
            if _still_queued(flight.sent):
                continue  # paho has not even got a PUBACK for the last copy: another would only queue behind it
            found = await self._db(self._buffer.undelivered, batch_seq - 1, 1)
            if found and found[0].batch_seq == batch_seq:
                self._send(session, found[0], now, flight.attempts + 1)
                self.resent += 1
            else:  # acknowledged (or dropped by the buffer) meanwhile
                self._in_flight.pop(batch_seq, None)

        rejected = sum(1 for f in self._in_flight.values() if f.rejected)
        held = len(self._in_flight) - rejected + max(0, rejected - self._cfg.max_in_flight)
        room = self._cfg.max_in_flight - held
        if room <= 0 or self._newest <= self._floor:
            return
        live_from = max(self._floor, self._newest - self.live_slots)  # batches above it are live
        for batch in await self._db(self._buffer.undelivered, live_from, self.live_slots, self._unsendable()):
            if self._sendable(batch.batch_seq) and room > 0:
                self._send(session, batch, now, 1)
                room -= 1

        replaying = sum(1 for n, f in self._in_flight.items() if n <= live_from and not f.rejected)
        room = min(room, self._cfg.max_in_flight - self.live_slots - replaying)
        self._replay_after = max(self._replay_after, self._floor)
        if room <= 0 or self._tokens <= 0 or self._replay_after >= live_from:
            return
        for batch in await self._db(self._buffer.undelivered, self._replay_after, room, self._unsendable()):
            if batch.batch_seq > live_from or room <= 0 or self._tokens <= 0:
                break
            self._replay_after = batch.batch_seq
            if self._sendable(batch.batch_seq):  # not sent live earlier, still unacknowledged
                self._send(session, batch, now, 1)
                self._tokens -= batch.last_seq - batch.first_seq + 1
                room -= 1

    def _unsendable(self) -> frozenset[int]:
        """The batches :meth:`_sendable` refuses now, whose wires the buffer need not read."""
        return frozenset(self._in_flight).union(self._recently_acked)

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
        return min(self._cfg.ack_timeout * 2.0 ** max(attempts - 1, 0), self._cfg.ack_timeout_max)

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
