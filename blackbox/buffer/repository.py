"""The one repository the agent writes and the sealer and uplink read.

Sequence numbers are allocated here, inside the transaction that makes the records durable: a
number exists only once its record has committed, so sequence numbers in the buffer are
contiguous and survive restarts (the next number is derived from what is on disk at open).

The class is synchronous and not thread-safe; the agent calls it from one dedicated thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, func, insert, select, update

from blackbox.buffer.schema import SCHEMA_VERSION, events, meta, metadata, open_engine, readings, sealed
from blackbox.model import Context, Event, EventDraft, Quality, Reading, Record, Sample, Value, now_us


class BufferError(Exception):
    """The buffer cannot be used as it is (e.g. written by a newer agent)."""


@dataclass(frozen=True)
class StoredBatch:
    """A sealed batch as kept in the buffer until the store acknowledges it."""

    batch_seq: int
    first_seq: int
    last_seq: int
    hash: str
    wire: bytes
    delivered: bool


@dataclass(frozen=True)
class Committed:
    """What one :meth:`Buffer.commit` made durable."""

    readings: list[Reading]
    events: list[Event]


class Buffer:
    """Durable store of readings, events and sealed batches on the gateway."""

    def __init__(self, path: Path, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        self.path = path
        self.engine = open_engine(path, synchronous)
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            self._check_version(conn)
            self._next_seq = self._max_seq(conn) + 1

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------------

    def commit(self, samples: Sequence[Sample], drafts: Sequence[EventDraft], context: Context,
               ts_us: int | None = None, state: dict[str, Any] | None = None) -> Committed:
        """Make one poll cycle durable in one transaction and return it with sequence numbers.

        Events come first in sequence order: a context change found in this cycle is recorded
        before the readings that are attributed to it. ``state`` (if given) is saved in the same
        transaction, so that state derived from the records can never disagree with them.
        """
        ts = now_us() if ts_us is None else ts_us
        seq = self._next_seq
        event_rows: list[dict[str, Any]] = []
        made_events: list[Event] = []
        for d in drafts:
            ctx = d.context or context
            ev = Event(seq=seq, type=d.type, subject=d.subject, data=d.data, ts_us=d.ts_us or ts,
                       batch=ctx.batch, phase=ctx.phase)
            made_events.append(ev)
            event_rows.append({"seq": seq, "ts_us": ev.ts_us, "type": ev.type, "subject": ev.subject,
                               "data": orjson.dumps(ev.data).decode(), "batch": ev.batch, "phase": ev.phase})
            seq += 1
        reading_rows: list[dict[str, Any]] = []
        made_readings: list[Reading] = []
        for s in samples:
            r = Reading(seq=seq, tag=s.tag, value=s.value, quality=s.quality, reason=s.reason, ts_us=ts,
                        source_ts_us=s.source_ts_us, batch=context.batch, phase=context.phase)
            made_readings.append(r)
            reading_rows.append({"seq": seq, "ts_us": ts, "tag": s.tag, "value": _encode_value(s.value),
                                 "quality": s.quality.value, "reason": s.reason, "source_ts_us": s.source_ts_us,
                                 "batch": context.batch, "phase": context.phase})
            seq += 1
        with self.engine.begin() as conn:
            if event_rows:
                conn.execute(insert(events), event_rows)
            if reading_rows:
                conn.execute(insert(readings), reading_rows)
            if state is not None:
                self._put_meta(conn, "agent_state", orjson.dumps(state).decode())
        self._next_seq = seq
        return Committed(made_readings, made_events)

    # -- sealing -----------------------------------------------------------------------------

    def unsealed(self, after: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with sequence numbers above ``after``, in sequence order."""
        with self.engine.connect() as conn:
            rows_r = conn.execute(select(readings).where(readings.c.seq > after)
                                  .order_by(readings.c.seq).limit(limit)).all()
            rows_e = conn.execute(select(events).where(events.c.seq > after)
                                  .order_by(events.c.seq).limit(limit)).all()
        out: list[Record] = [_row_to_reading(r) for r in rows_r] + [_row_to_event(e) for e in rows_e]
        out.sort(key=lambda rec: rec.seq)
        return out[:limit]

    def unsealed_stats(self, after: int) -> tuple[int, int | None]:
        """Number of records above ``after`` and the gateway time of the oldest one."""
        with self.engine.connect() as conn:
            n_r, t_r = conn.execute(select(func.count(), func.min(readings.c.ts_us))
                                    .where(readings.c.seq > after)).one()
            n_e, t_e = conn.execute(select(func.count(), func.min(events.c.ts_us))
                                    .where(events.c.seq > after)).one()
        times = [t for t in (t_r, t_e) if t is not None]
        return n_r + n_e, (min(times) if times else None)

    def last_sealed(self) -> StoredBatch | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sealed).order_by(sealed.c.batch_seq.desc()).limit(1)).first()
        return _row_to_batch(row) if row else None

    def add_sealed(self, batch_seq: int, first_seq: int, last_seq: int, hash_: str, wire: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(sealed).values(batch_seq=batch_seq, first_seq=first_seq, last_seq=last_seq,
                                               hash=hash_, wire=wire, sealed_at_us=now_us()))

    # -- delivery ----------------------------------------------------------------------------

    def undelivered(self, after_batch_seq: int, limit: int) -> list[StoredBatch]:
        """Sealed batches not yet acknowledged by the store, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(sealed).where(sealed.c.delivered_at_us.is_(None),
                                                     sealed.c.batch_seq > after_batch_seq)
                                .order_by(sealed.c.batch_seq).limit(limit)).all()
        return [_row_to_batch(r) for r in rows]

    def mark_delivered(self, batch_seq: int, hash_: str) -> bool:
        """Record the store's acknowledgement; ``False`` if no such batch has that hash."""
        with self.engine.begin() as conn:
            res = conn.execute(update(sealed).where(sealed.c.batch_seq == batch_seq, sealed.c.hash == hash_,
                                                    sealed.c.delivered_at_us.is_(None))
                               .values(delivered_at_us=now_us()))
        return res.rowcount == 1

    def pending_counts(self) -> tuple[int, int]:
        """(undelivered batches, last sequence number committed)."""
        with self.engine.connect() as conn:
            n = conn.execute(select(func.count()).where(sealed.c.delivered_at_us.is_(None))).scalar() or 0
        return n, self._next_seq - 1

    # -- state -------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The agent state saved with the last commit (context, trigger values…), or ``{}``."""
        with self.engine.connect() as conn:
            raw = conn.execute(select(meta.c.value).where(meta.c.key == "agent_state")).scalar()
        return orjson.loads(raw) if raw else {}

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    # -- reading back (status, tests) --------------------------------------------------------

    def readings_between(self, first_seq: int, last_seq: int) -> list[Reading]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(readings).where(readings.c.seq.between(first_seq, last_seq))
                                .order_by(readings.c.seq)).all()
        return [_row_to_reading(r) for r in rows]

    # -- internals ---------------------------------------------------------------------------

    def _check_version(self, conn: Connection) -> None:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            self._put_meta(conn, "schema_version", str(SCHEMA_VERSION))
        elif int(found) > SCHEMA_VERSION:
            raise BufferError(f"{self.path} was written by a newer agent (schema {found}, this agent knows "
                              f"{SCHEMA_VERSION}); upgrade the agent, do not delete the buffer")

    @staticmethod
    def _max_seq(conn: Connection) -> int:
        candidates = [
            conn.execute(select(func.max(readings.c.seq))).scalar(),
            conn.execute(select(func.max(events.c.seq))).scalar(),
            conn.execute(select(func.max(sealed.c.last_seq))).scalar(),
        ]
        return max((c for c in candidates if c is not None), default=0)

    @staticmethod
    def _put_meta(conn: Connection, key: str, value: str) -> None:
        updated = conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount
        if not updated:
            conn.execute(insert(meta).values(key=key, value=value))


def _encode_value(value: Value) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _row_to_reading(r: Any) -> Reading:
    return Reading(seq=r.seq, tag=r.tag, value=None if r.value is None else orjson.loads(r.value),
                   quality=Quality(r.quality), reason=r.reason, ts_us=r.ts_us, source_ts_us=r.source_ts_us,
                   batch=r.batch, phase=r.phase)


def _row_to_event(e: Any) -> Event:
    return Event(seq=e.seq, type=e.type, subject=e.subject, data=orjson.loads(e.data), ts_us=e.ts_us,
                 batch=e.batch, phase=e.phase)


def _row_to_batch(r: Any) -> StoredBatch:
    return StoredBatch(batch_seq=r.batch_seq, first_seq=r.first_seq, last_seq=r.last_seq, hash=r.hash,
                       wire=r.wire, delivered=r.delivered_at_us is not None)
