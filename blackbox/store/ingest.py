"""Ingest: verify a sealed batch, check it against the stored chain, insert it in one transaction.

The order of checks matters: nothing a sender claims is trusted before the signature verifies
with a key enrolled for the gateway named by the MQTT topic, and nothing is written unless every
check passed. Whatever is refused is recorded in ``rejections`` (reason, detail, the raw bytes
capped) in its own transaction, so a rejection never touches stored data.

Database errors (the database is down, a disk is full) are *not* rejections: they propagate, and
the caller must not acknowledge the batch, so that the sender or the broker delivers it again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from blackbox.model import now_us
from blackbox.seal import (
    BadSignature,
    MalformedBatch,
    OpenedBatch,
    Rotation,
    RotationError,
    SealError,
    key_id,
    key_range_breach,
    load_public_key,
    open_batch,
    verify_batch,
)
from blackbox.seal import public_key_pem as seal_public_key_pem
from blackbox.store.chain import (
    ChainState,
    Conflict,
    KeyState,
    StoredBatch,
    chain_state,
    place,
    read_state,
    state_params,
    state_sql,
)
from blackbox.store.derive import CHUNK_COLUMNS, Derived, decode_value, derive, encode_value
from blackbox.store.joint import register_spec_events
from blackbox.store.schema import (
    events,
    gateway_keys,
    gateways,
    reading_chunks,
    rejections,
    sealed_batches,
    tag_configs,
)
from blackbox.store.tlog import LogPosition, TransparencyLog, append_batch, append_entry, status_ref

log = logging.getLogger("blackbox.store.ingest")

Status = Literal["stored", "duplicate", "rejected"]

REASONS: dict[str, str] = {
    "malformed": "the bytes are not a well-formed sealed batch (layout, header, payload or records)",
    "topic_mismatch": "the header names another site or gateway than the MQTT topic it came on",
    "unknown_gateway": "no key is enrolled for this site and gateway",
    "unknown_key": "the batch is signed with a key id not enrolled for this gateway",
    "revoked_key": "the key was enrolled for this gateway but has been revoked",
    "bad_signature": "the Ed25519 signature does not verify with the enrolled key",
    "fork": "another batch of this gateway is stored with the same batch_seq or naming the same predecessor "
    "(prev_hash); the finding names both batches",
    "chain_broken": "prev_hash does not match the stored neighbour, names a stored batch that is not numbered "
    "batch_seq - 1, or a stored batch names this one at the wrong distance",
    "replay": "a record sequence number is already stored from another batch of this gateway",
    "key_not_in_force": "the signing key is enrolled but not for these records: they precede the rotation that "
    "introduced it, or follow the rotation that retired it",
    "key_rotation": "a key.rotated event breaks the rules: not the batch's last record, not signed by the key it "
    "retires, inconsistent key data, or a key already retired at another record",
}
"""Every rejection reason, with what it means (also in docs/store.md)."""

RAW_CAP = 64 * 1024
"""Bytes of a rejected message kept in ``rejections.raw`` (its SHA-256 always covers all of it)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one message; ``ack()`` is the JSON-ready acknowledgement for the gateway."""

    status: Status
    reason: str | None = None
    batch_seq: int | None = None
    hash: str | None = None
    detail: str | None = None
    log: LogPosition | None = None
    """The transparency-log entry of the batch (or of the rejection), and the tree head after it."""
    received_at_us: int | None = None
    """When the store accepted the batch (the time in its log entry)."""
    n_readings: int = field(default=0, compare=False)
    """Readings stored (0 unless ``stored``): for the store's metrics, not part of the outcome."""
    sealed_at_us: int | None = field(default=None, compare=False)
    """When the gateway sealed the batch (``stored`` only): for the store's ingest-lag metric."""

    def ack(self) -> dict[str, Any]:
        return {"batch_seq": self.batch_seq, "hash": self.hash, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch that passed :meth:`Ingestor.prepare`: verified, its rows derived, not yet stored."""

    wire: bytes
    topic: str | None
    topic_site: str
    topic_gateway: str
    received_at: int
    opened: OpenedBatch
    derived: Derived
    gateway_id: int


class Rejected(Exception):
    """Internal: a check failed; carries the reason code and a human-readable detail."""

    def __init__(self, reason: str, detail: str, conflict: StoredBatch | None = None) -> None:
        if reason not in REASONS:
            raise RuntimeError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.conflict = conflict
        """The stored batch this one conflicts with (a fork names both batches)."""


class EnrollmentError(ValueError):
    """A key cannot be enrolled (not an Ed25519 public key, or already enrolled elsewhere)."""


@dataclass(frozen=True, slots=True)
class EnrolledKey:
    gateway_id: int
    key_id: str
    public_key: Ed25519PublicKey
    revoked_at_us: int | None


class Ingestor:
    """Verifies and stores sealed batches; safe to share between threads of one process.

    Several store processes may ingest into the same database concurrently: each transaction
    starts by updating the gateway's row, which serialises ingestion per gateway on PostgreSQL
    (row lock) and takes the write lock at once on SQLite, so the chain checks always see the
    neighbours another worker committed.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], int] = now_us, raw_cap: int = RAW_CAP) -> None:
        self.engine = engine
        self._clock = clock
        self._raw_cap = raw_cap
        self._keys: dict[tuple[int, str], Ed25519PublicKey] = {}
        self._known: dict[tuple[str, str, str], tuple[int, Ed25519PublicKey]] = {}
        """(site, gateway, key id) -> (gateway id, public key) of keys found enrolled and not revoked.

        Both never change for a key id (it is the hash of the public key, the gateway's id its row's
        primary key), so a batch signed by a known key is verified without asking the database; whether
        the key is still enrolled and not revoked is read again under the gateway's lock in :meth:`_store`.
        """
        self._lock = threading.Lock()

    # -- enrolment -------------------------------------------------------------------------

    def enroll(self, gateway: str, site: str, public_key_pem: str | bytes) -> str:
        """Trust ``public_key_pem`` for batches of ``gateway`` at ``site``; returns its key id.

        Any form :func:`blackbox.seal.load_public_key` reads is accepted; the store keeps the PEM.

        Enrolling the same key again is a no-op (a revoked key stays revoked). A gateway may have
        several keys (rotation): batches name the key that signed them.
        """
        try:
            public_key = load_public_key(public_key_pem)
        except (SealError, ValueError, TypeError) as exc:
            raise EnrollmentError(f"not an Ed25519 public key: {exc}") from exc
        kid = key_id(public_key)
        pem = public_key_pem_text(public_key)
        now = self._clock()
        with self.engine.begin() as conn:
            gid = self._gateway_id(conn, site, gateway, create=True)
            if gid is None:
                raise RuntimeError("internal error: expected gid is not None")
            existing = conn.execute(
                select(gateway_keys.c.id).where(gateway_keys.c.gateway_id == gid, gateway_keys.c.key_id == kid)
            ).first()
            if existing is None:
                conn.execute(
                    insert(gateway_keys).values(gateway_id=gid, key_id=kid, public_key_pem=pem, enrolled_at_us=now)
                )
                append_entry(conn, "key.enrolled", {"site": site, "gateway": gateway, "key_id": kid,
                                                    "public_key_pem": pem, "at_us": now}, ref=kid, at_us=now)
                log.info("enrolled key %s for gateway %s/%s", kid, site, gateway)
        return kid

    def revoke(self, gateway: str, site: str, kid: str) -> bool:
        """Stop trusting key ``kid`` for new batches; returns whether it was enrolled and active.

        Batches already stored stay verifiable: the trace accepts a revoked key for batches the
        store received before the revocation.
        """
        now = self._clock()
        with self.engine.begin() as conn:
            gid = self._gateway_id(conn, site, gateway, create=False)
            if gid is None:
                return False
            result = conn.execute(
                update(gateway_keys)
                .where(
                    gateway_keys.c.gateway_id == gid,
                    gateway_keys.c.key_id == kid,
                    gateway_keys.c.revoked_at_us.is_(None),
                )
                .values(revoked_at_us=now)
            )
            if result.rowcount:
                append_entry(conn, "key.revoked", {"site": site, "gateway": gateway, "key_id": kid, "at_us": now},
                             ref=kid, at_us=now)
            return bool(result.rowcount)

    def _gateway_id(self, conn: Connection, site: str, gateway: str, *, create: bool) -> int | None:
        row = conn.execute(select(gateways.c.id).where(gateways.c.site == site, gateways.c.gateway == gateway)).first()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        result = conn.execute(insert(gateways).values(site=site, gateway=gateway, created_at_us=self._clock()))
        pk = result.inserted_primary_key
        if pk is None:
            raise RuntimeError("internal error: expected pk is not None")
        return int(pk[0])

    def _key(self, conn: Connection, site: str, gateway: str, kid: str) -> EnrolledKey:
        gid = self._gateway_id(conn, site, gateway, create=False)
        if gid is None:
            raise Rejected("unknown_gateway", f"no key is enrolled for gateway {gateway!r} of site {site!r}")
        row = conn.execute(
            select(gateway_keys.c.public_key_pem, gateway_keys.c.revoked_at_us).where(
                gateway_keys.c.gateway_id == gid, gateway_keys.c.key_id == kid
            )
        ).first()
        if row is None:
            raise Rejected("unknown_key", f"key {kid!r} is not enrolled for gateway {site}/{gateway}")
        with self._lock:
            public_key = self._keys.get((gid, kid))
            if public_key is None:
                public_key = self._keys[(gid, kid)] = load_public_key(row.public_key_pem)
        return EnrolledKey(gid, kid, public_key, row.revoked_at_us)

    # -- ingestion -------------------------------------------------------------------------

    def handle(self, wire: bytes, topic_site: str, topic_gateway: str, *, topic: str | None = None) -> IngestResult:
        """Verify, check and store one message received on the topic of ``topic_site/topic_gateway``."""
        prepared = self.prepare(wire, topic_site, topic_gateway, topic=topic)
        return prepared if isinstance(prepared, IngestResult) else self.store(prepared)

    def prepare(
        self, wire: bytes, topic_site: str, topic_gateway: str, *, topic: str | None = None
    ) -> Prepared | IngestResult:
        """The checks that need no lock: layout, topic, enrolled key, signature, and the rows derived.

        Returns what :meth:`store` takes, or the rejection (recorded). :meth:`handle` is both in
        turn; the store service runs them in two threads, so that the next batch is decoded and
        verified while the database inserts the previous one.
        """
        received_at = self._clock()
        opened: OpenedBatch | None = None
        try:
            opened = self._open(wire)
            h = opened.header
            if h.site != topic_site or h.gateway != topic_gateway:
                raise Rejected(
                    "topic_mismatch",
                    f"header names {h.site}/{h.gateway} but it came on the topic of {topic_site}/{topic_gateway}",
                )
            gid = self._verify(opened)
            derived = self._derive(opened, gid)
            return Prepared(wire, topic, topic_site, topic_gateway, received_at, opened, derived, gid)
        except Rejected as rej:
            return self._rejected(wire, topic, topic_site, topic_gateway, opened, rej, received_at)

    def _verify(self, opened: OpenedBatch) -> int:
        """The gateway id, once the signature verifies with a key enrolled for the batch's gateway.

        A key found enrolled and not revoked before is taken from memory (:attr:`_known`); anything
        else is looked up, so that a batch of an unknown or revoked key is refused for that reason
        first, as a bad signature only with a key in force.
        """
        h = opened.header
        cache_key = (h.site, h.gateway, h.key_id)
        with self._lock:
            known = self._known.get(cache_key)
        if known is not None:
            try:
                verify_batch(opened, known[1])
                return known[0]
            except BadSignature:
                pass  # refused either way: the lookup below says why, as it would have without the cache
        with self.engine.connect() as conn:
            enrolled = self._key(conn, h.site, h.gateway, h.key_id)
        if enrolled.revoked_at_us is not None:
            raise Rejected("revoked_key", f"key {h.key_id} of {h.site}/{h.gateway} is revoked")
        try:
            verify_batch(opened, enrolled.public_key)
        except BadSignature as exc:
            raise Rejected("bad_signature", str(exc) or "signature does not verify") from None
        with self._lock:
            self._known[cache_key] = (enrolled.gateway_id, enrolled.public_key)
        return enrolled.gateway_id

    def store(self, prepared: Prepared) -> IngestResult:
        """Check a prepared batch against the stored chain and insert it, in one transaction."""
        p = prepared
        try:
            for attempt in (1, 2):
                try:
                    return self._store(p.opened, p.derived, p.gateway_id, p.received_at)
                except IntegrityError:
                    # Another worker stored this batch or an overlapping one between our checks and our
                    # insert: check again against what it committed (the second pass decides).
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except Rejected as rej:
            return self._rejected(p.wire, p.topic, p.topic_site, p.topic_gateway, p.opened, rej, p.received_at)

    def _rejected(self, wire: bytes, topic: str | None, topic_site: str, topic_gateway: str,
                  opened: OpenedBatch | None, rej: Rejected, received_at: int) -> IngestResult:
        batch_seq = opened.header.batch_seq if opened is not None else None
        digest = opened.hash if opened is not None else None
        pos = self._record_rejection(wire, topic, topic_site, topic_gateway, batch_seq, digest, rej, received_at)
        log.warning("rejected batch %s from %s/%s: %s", batch_seq, topic_site, topic_gateway, rej)
        return IngestResult("rejected", rej.reason, batch_seq, digest, rej.detail, pos, received_at)

    @staticmethod
    def _open(wire: bytes) -> OpenedBatch:
        try:
            return open_batch(wire)
        except MalformedBatch as exc:
            raise Rejected("malformed", str(exc) or "malformed batch") from None
        except Exception as exc:  # garbage must never crash the store; the seal code should raise MalformedBatch
            raise Rejected("malformed", f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _derive(opened: OpenedBatch, gid: int) -> Derived:
        """The batch's rows (:func:`blackbox.store.derive.derive`); a batch they cannot come from is rejected."""
        try:
            return derive(opened, gid)
        except RotationError as exc:
            raise Rejected("key_rotation", str(exc)) from None
        except MalformedBatch as exc:
            raise Rejected("malformed", str(exc) or "records cannot be decoded") from None
        except Exception as exc:  # garbage must never crash the store; the seal code should raise MalformedBatch
            raise Rejected("malformed", f"records cannot be decoded: {type(exc).__name__}: {exc}") from None

    def _store(self, opened: OpenedBatch, derived: Derived, gid: int, received_at: int) -> IngestResult:
        h = opened.header
        with self.engine.begin() as conn:
            state = _lock_and_read(conn, gid, opened, received_at)
            self._check_key_enrolled(opened, state.key)
            try:
                displaced = place(conn, gid, opened, state)
            except Conflict as exc:
                raise Rejected(exc.reason, exc.detail, exc.other) from None
            if displaced is None:
                return self._duplicate(conn, gid, h.batch_seq, opened.hash)
            self._check_key_in_force(opened, state.key)
            if derived.rotation is not None:
                self._rotate(conn, gid, derived.rotation, received_at)
            for loser in displaced:
                self._displace(conn, gid, loser, opened, received_at)
            conn.execute(
                insert(sealed_batches).values(
                    gateway_id=gid, received_at_us=received_at, wire=opened.wire, **derived.batch
                )
            )
            if derived.readings:
                _insert_chunks(conn, derived.readings)
            if derived.events:
                conn.execute(insert(events), derived.events)
            if derived.tag_configs:
                conn.execute(insert(tag_configs), derived.tag_configs)
            register_spec_events(conn, h.site, h.gateway, derived.event_records, received_at)
            # last: the log's lock is held from here to the commit
            pos = append_batch(conn, gid, h.site, h.gateway, h.batch_seq, opened.hash, received_at)
        return IngestResult("stored", None, h.batch_seq, opened.hash, log=pos, received_at_us=received_at,
                            n_readings=derived.n_readings, sealed_at_us=h.sealed_at_us)

    @staticmethod
    def _duplicate(conn: Connection, gid: int, batch_seq: int, hash_: str) -> IngestResult:
        """A batch stored before: its receipt names its first log entry, under the current tree head."""
        sb = sealed_batches.c
        received_at_us = conn.execute(select(sb.received_at_us).where(sb.gateway_id == gid, sb.hash == hash_)).scalar()
        tlog = TransparencyLog(conn.engine)
        found = tlog.find("batch", hash_, conn)
        size, root = tlog.head(conn)
        pos = LogPosition(found[0], size, root) if found is not None else None  # None: stored before the log
        return IngestResult("duplicate", None, batch_seq, hash_, log=pos, received_at_us=received_at_us)

    @staticmethod
    def _check_key_enrolled(opened: OpenedBatch, key: KeyState | None) -> None:
        """The signing key, as read under the gateway's lock, is still enrolled and not revoked."""
        h = opened.header
        if key is None:
            raise Rejected("unknown_key", f"key {h.key_id!r} is not enrolled for gateway {h.site}/{h.gateway}")
        if key.revoked_at_us is not None:
            raise Rejected("revoked_key", f"key {h.key_id} of {h.site}/{h.gateway} is revoked")

    @staticmethod
    def _check_key_in_force(opened: OpenedBatch, row: KeyState | None) -> None:
        """The signing key's validity range (set by rotations) must cover the batch's records."""
        h = opened.header
        if row is None:
            raise RuntimeError("internal error: expected the key's row (checked by _check_key_enrolled)")
        breach = key_range_breach(h, row.valid_from_seq, row.valid_to_seq)
        if breach == "before":
            raise Rejected("key_not_in_force", f"key {h.key_id} signs only from record {row.valid_from_seq}, "
                                               f"batch {h.batch_seq} starts at {h.first_seq}")
        if breach == "after":
            raise Rejected("key_not_in_force", f"key {h.key_id} was retired after record {row.valid_to_seq}, "
                                               f"batch {h.batch_seq} ends at {h.last_seq}")

    def _rotate(self, conn: Connection, gid: int, rotation: Rotation, received_at: int) -> None:
        """Retire the old key after the rotation's record and trust the new one from the next record.

        The batch carrying the rotation was signed by the old key, which is enrolled and in force:
        the chain itself vouches for the new key, so no operator has to enroll it.
        """
        gk = gateway_keys.c
        old = conn.execute(select(gk.valid_to_seq).where(gk.gateway_id == gid, gk.key_id == rotation.old_key_id)).one()
        if old.valid_to_seq is not None and old.valid_to_seq != rotation.old_valid_to:
            raise Rejected("key_rotation", f"key {rotation.old_key_id} was already retired after record "
                                           f"{old.valid_to_seq}; a second rotation at {rotation.seq} is a fork")
        new = conn.execute(
            select(gk.id, gk.valid_from_seq).where(gk.gateway_id == gid, gk.key_id == rotation.new_key_id)
        ).first()
        if new is not None and new.valid_from_seq is not None and new.valid_from_seq != rotation.new_valid_from:
            raise Rejected("key_rotation", f"key {rotation.new_key_id} was already rotated in at record "
                                           f"{new.valid_from_seq}")
        conn.execute(update(gateway_keys).where(gk.gateway_id == gid, gk.key_id == rotation.old_key_id)
                     .values(valid_to_seq=rotation.old_valid_to))
        values = {"valid_from_seq": rotation.new_valid_from, "rotated_from": rotation.old_key_id}
        if new is None:
            conn.execute(insert(gateway_keys).values(
                gateway_id=gid, key_id=rotation.new_key_id, public_key_pem=public_key_pem_text(rotation.new_key),
                enrolled_at_us=received_at, enrolled_by="rotation", **values))
        else:
            conn.execute(update(gateway_keys).where(gk.id == new.id).values(**values))
        site, gateway = conn.execute(select(gateways.c.site, gateways.c.gateway).where(gateways.c.id == gid)).one()
        append_entry(conn, "key.rotated", {"site": site, "gateway": gateway, "old_key_id": rotation.old_key_id,
                                           "new_key_id": rotation.new_key_id, "seq": rotation.seq,
                                           "at_us": received_at}, ref=rotation.new_key_id, at_us=received_at)
        log.warning("gateway %d rotated from key %s to key %s at record %d", gid, rotation.old_key_id,
                    rotation.new_key_id, rotation.seq)

    def _displace(self, conn: Connection, gid: int, loser: StoredBatch, winner: OpenedBatch, received_at: int) -> None:
        """Move a stored batch that lost a conflict (:mod:`blackbox.store.chain`) out of the chain.

        Its rows go; its exact bytes go to ``rejections`` in full, as a ``fork`` naming the batch
        that won, in the same transaction as the winner's insert.
        """
        sb, h = sealed_batches.c, winner.header
        wire = conn.execute(select(sb.wire).where(sb.gateway_id == gid, sb.batch_seq == loser.batch_seq)).scalar_one()
        conn.execute(delete(reading_chunks).where(reading_chunks.c.gateway_id == gid,
                                                  reading_chunks.c.batch_seq == loser.batch_seq))
        for table in (events, tag_configs):
            conn.execute(delete(table).where(table.c.gateway_id == gid,
                                             table.c.seq.between(loser.first_seq, loser.last_seq)))
        conn.execute(delete(sealed_batches).where(sb.gateway_id == gid, sb.batch_seq == loser.batch_seq))
        wire = bytes(wire)
        raw_sha256 = hashlib.sha256(wire).hexdigest()
        detail = (f"moved aside after it was stored: batch {h.batch_seq} ({winner.hash}), which links to the "
                  f"stored chain, conflicts with it and it did not link to a stored predecessor")
        conn.execute(insert(rejections).values(
            received_at_us=received_at, topic=None, site=h.site, gateway=h.gateway, batch_seq=loser.batch_seq,
            hash=loser.hash, reason="fork", detail=detail, raw_sha256=raw_sha256,
            raw_size=len(wire), raw=wire, raw_truncated=False, conflict_batch_seq=h.batch_seq,
            conflict_hash=winner.hash))
        append_entry(conn, "rejection", {"site": h.site, "gateway": h.gateway, "batch_seq": loser.batch_seq,
                                         "hash": loser.hash, "reason": "fork", "raw_sha256": raw_sha256,
                                         "at_us": received_at}, ref=raw_sha256, at_us=received_at)
        log.warning("gateway %s/%s: stored %s %s", h.site, h.gateway, loser.name(), detail)

    def record_status(self, site: str, gateway: str, payload: bytes) -> bool:
        """Note a gateway's status message (online/offline, the last will); ``False`` if ignored.

        Only gateways with an enrolled key are tracked, so nobody fills the table by publishing.
        """
        try:
            doc = orjson.loads(payload)
            state, reason = doc["state"], doc.get("reason")
            if state not in ("online", "offline") or not (reason is None or isinstance(reason, str)):
                raise ValueError(f"state {state!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed status of %s/%s (%s): %r", site, gateway, exc, payload[:200])
            return False
        g = gateways.c
        reason = None if reason is None else reason[:500]
        with self.engine.begin() as conn:
            if conn.execute(select(g.id).where(g.site == site, g.gateway == gateway)).first() is None:
                return False
            now = self._clock()
            # only a change is recorded (a retained status comes again at every resubscription), and it
            # is logged, so that the status row can be checked against the log (blackbox store verify)
            changed = conn.execute(update(gateways).where(
                g.site == site, g.gateway == gateway,
                or_(g.status.is_distinct_from(state), g.status_reason.is_distinct_from(reason)),
            ).values(status=state, status_reason=reason, status_at_us=now)).rowcount
            if changed:
                append_entry(conn, "gateway.status", {"site": site, "gateway": gateway, "state": state,
                                                      "reason": reason, "at_us": now},
                             ref=status_ref(site, gateway), at_us=now)
        if changed:
            log.info("gateway %s/%s is %s%s", site, gateway, state, f" ({reason})" if reason else "")
        return True

    def _record_rejection(
        self,
        wire: bytes,
        topic: str | None,
        site: str | None,
        gateway: str | None,
        batch_seq: int | None,
        digest: str | None,
        rej: Rejected,
        received_at: int,
    ) -> LogPosition:
        raw_sha256 = hashlib.sha256(wire).hexdigest()
        with self.engine.begin() as conn:
            conn.execute(
                insert(rejections).values(
                    received_at_us=received_at,
                    topic=topic,
                    site=site,
                    gateway=gateway,
                    batch_seq=batch_seq,
                    hash=digest,
                    reason=rej.reason,
                    detail=rej.detail[:4000],
                    raw_sha256=raw_sha256,
                    raw_size=len(wire),
                    raw=bytes(wire[: self._raw_cap]),
                    raw_truncated=len(wire) > self._raw_cap,
                    conflict_batch_seq=rej.conflict.batch_seq if rej.conflict is not None else None,
                    conflict_hash=rej.conflict.hash if rej.conflict is not None else None,
                )
            )
            return append_entry(conn, "rejection", {"site": site, "gateway": gateway, "batch_seq": batch_seq,
                                                    "hash": digest, "reason": rej.reason, "raw_sha256": raw_sha256,
                                                    "at_us": received_at}, ref=raw_sha256, at_us=received_at)


def public_key_pem_text(key: Ed25519PublicKey) -> str:
    """PEM of a public key as ``str`` (whatever type the seal package returns)."""
    pem: str | bytes = seal_public_key_pem(key)
    return pem.decode("ascii") if isinstance(pem, bytes) else pem


_LOCK_PG = "UPDATE gateways SET last_batch_at_us = %s WHERE id = %s"
_STATE_PG = state_sql("%s")


def _psycopg(conn: Connection) -> Any | None:
    """The psycopg 3 connection under ``conn`` (``None`` on another database or driver)."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return None
    dbapi_conn = conn.connection.driver_connection
    if dbapi_conn is None:
        raise RuntimeError("internal error: expected dbapi_conn is not None")
    return dbapi_conn


@contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """The driver's errors of statements sent past SQLAlchemy, as SQLAlchemy's (``IntegrityError``,
    ``OperationalError``, ...): what the retries of :meth:`Ingestor.store` and the service expect."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=conn.dialect) from exc


def _lock_and_read(conn: Connection, gid: int, opened: OpenedBatch, received_at: int) -> ChainState:
    """Lock the gateway's chain, then read its state (:func:`blackbox.store.chain.read_state`).

    The first statement is a write: it takes SQLite's write lock at once and PostgreSQL's row lock
    on the gateway, so no other worker changes this chain until we commit. The state is read by the
    next statement, whose snapshot (READ COMMITTED) is taken after the lock was granted: it sees what
    the worker that held the lock before committed. On PostgreSQL with psycopg the lock and the read
    go in one pipeline: one round trip for the two statements, still run one after the other (psycopg
    sends the transaction's BEGIN first, in a round trip of its own).
    """
    dbapi_conn = _psycopg(conn)
    if dbapi_conn is None:
        conn.execute(update(gateways).where(gateways.c.id == gid).values(last_batch_at_us=received_at))
        return read_state(conn, gid, opened)
    with _driver_errors(conn, _STATE_PG), dbapi_conn.cursor() as lock, dbapi_conn.cursor() as cur:
        with dbapi_conn.pipeline():  # the results come with the pipeline's end (fetching earlier costs a round trip)
            lock.execute(_LOCK_PG, (received_at, gid))
            cur.execute(_STATE_PG, state_params(gid, opened))
        rows = cur.fetchall()
    return chain_state(rows, opened)


_CHUNK_INSERTS: dict[str, tuple[str, list[int] | None]] = {}
_COPY_CHUNKS = f"COPY reading_chunks ({', '.join(CHUNK_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_CHUNK_PG_TYPES = ["int8", "int8", "varchar", "varchar", "varchar", "int8", "int8", "int8", "int8", "int4",
                   "bytea", "bytea", "bytea", "bytea", "bytea", "bytea", "bytea", "bytea", "bytea"]
"""PostgreSQL types of ``CHUNK_COLUMNS`` for binary COPY (psycopg's C dumpers; the server parses no text)."""


def _insert_chunks(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert of chunk tuples (``CHUNK_COLUMNS`` order) straight to the driver.

    The columns need no bind processor, so SQLAlchemy's per-row parameter processing is skipped.
    On PostgreSQL with psycopg 3 the rows go through binary ``COPY`` in the same transaction.
    """
    dbapi_conn = _psycopg(conn)
    if dbapi_conn is not None:
        from psycopg.adapt import PyFormat  # only here: a store on SQLite does not load psycopg

        with _driver_errors(conn, _COPY_CHUNKS), dbapi_conn.cursor() as cur:
            # set_types looks dumpers up by type oid, and psycopg's last word for bytea is the DB-API
            # Binary wrapper's dumper, written in Python: the C dumper of bytes instead (a third of
            # the CPU of a one-reading chunk went to it)
            cur.adapters.register_dumper(bytes, cur.adapters.get_dumper(bytes, PyFormat.BINARY))
            with cur.copy(_COPY_CHUNKS) as copy:
                copy.set_types(_CHUNK_PG_TYPES)
                for row in rows:
                    copy.write_row(row)
        return
    cached = _CHUNK_INSERTS.get(conn.dialect.name)
    if cached is None:
        compiled = insert(reading_chunks).compile(dialect=conn.dialect, column_keys=list(CHUNK_COLUMNS))
        order = [CHUNK_COLUMNS.index(k) for k in compiled.positiontup or ()] if compiled.positional else None
        cached = _CHUNK_INSERTS[conn.dialect.name] = (str(compiled), order)
    sql, order = cached
    params: list[Any]
    if order is None:
        params = [dict(zip(CHUNK_COLUMNS, r, strict=True)) for r in rows]
    elif order == list(range(len(CHUNK_COLUMNS))):
        params = rows
    else:
        params = [tuple(r[i] for i in order) for r in rows]
    conn.exec_driver_sql(sql, params)


__all__ = [
    "REASONS",
    "EnrollmentError",
    "IngestResult",
    "Ingestor",
    "Prepared",
    "decode_value",
    "encode_value",
]
