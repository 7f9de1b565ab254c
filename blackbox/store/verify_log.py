"""Re-verify the store's transparency log and hold the tables to what it says was accepted.

The log (:mod:`blackbox.store.tlog`) records every accepted batch, key enrolment, rotation and
revocation. Its tree heads are signed with the store key and published (checkpoints); gateways
and witnesses keep them. :func:`check_log` recomputes the Merkle root over the stored entries
(streamed, ``O(log n)`` memory), compares it with the log's state and with every stored signed
checkpoint (verifying the store's signature when its verifier key is given), and then checks the
tables against the entries:

* every ``batch`` entry has its stored batch, unless a later ``rejection`` entry moved it aside as
  a fork, so deleting the newest batches of a chain shows; and (per batch and per gateway, from
  :func:`blackbox.store.verify.check_chain`, so the trace checks them too) every stored batch has
  its entry with the same site, gateway, batch_seq and arrival time (:func:`check_batch_logged`),
  so re-signing a chain with another key shows;
* every operator key in ``gateway_keys`` has its ``key.enrolled`` entry with the same public key,
  every rotation its ``key.rotated`` entry, every revocation its ``key.revoked`` entry
  (:func:`check_key_rows`), and no logged key has disappeared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, exists, select

from blackbox.seal import Rotation
from blackbox.store.findings import Difference, Emit
from blackbox.store.joint import purges
from blackbox.store.schema import (
    gateway_keys,
    gateways,
    rejections,
    sealed_batches,
    tlog_checkpoints,
    tlog_entries,
    tlog_state,
)
from blackbox.store.tlog import status_ref
from blackbox.tlog.merkle import leaf_hash, node_hash
from blackbox.tlog.note import Checkpoint, NoteError, Verifier, open_checkpoint, split_note

LOG = "transparency log"
REF_FIELD = {"batch": "hash", "key.enrolled": "key_id", "key.rotated": "new_key_id", "key.revoked": "key_id",
             "rejection": "raw_sha256"}
"""The payload field each kind of entry is looked up by (``tlog_entries.ref``)."""


@dataclass
class LogStats:
    entries: int = 0
    checkpoints: int = 0
    checkpoints_signed: int = 0
    """Checkpoints whose signature was verified (0 without the store's verifier key)."""


class StreamingRoot:
    """The RFC 6962 root of a growing list of leaves, keeping only the complete subtrees (a stack)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash), heights strictly decreasing
        self.size = 0

    def add(self, data: bytes) -> None:
        height, h = 0, leaf_hash(data)
        while self._stack and self._stack[-1][0] == height:
            h = node_hash(self._stack.pop()[1], h)
            height += 1
        self._stack.append((height, h))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        h = self._stack[-1][1]
        for _height, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def check_log(conn: Connection, emit: Emit, verifier: Verifier | None = None) -> LogStats:
    """Check the log against itself, its checkpoints and the tables; every problem goes to ``emit``."""
    stats = LogStats()
    out = _Out(emit)
    notes = {int(size): note for size, note in conn.execute(select(tlog_checkpoints.c.size, tlog_checkpoints.c.note))}
    gateway_ids = {(site, gateway): gid for gid, site, gateway in
                   conn.execute(select(gateways.c.id, gateways.c.site, gateways.c.gateway))}
    roots = _walk(conn, out, set(notes), stats, gateway_ids)
    size, root_hex = conn.execute(select(tlog_state.c.size, tlog_state.c.root).where(tlog_state.c.id == 1)).one()
    computed = roots.get(stats.entries)
    if int(size) != stats.entries or computed is None or root_hex != computed.hex():
        out.log("log_altered", f"the log's state says {size} entries with root {root_hex}; its stored entries "
                f"give {stats.entries} with root {computed.hex() if computed else '?'}", "tlog_state", "id=1")
    for cp_size, note in sorted(notes.items()):
        stats.checkpoints += 1
        _check_checkpoint(out, cp_size, note, roots.get(cp_size), verifier, stats)
    _logged_but_gone(conn, out)
    return stats


class _Out:
    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.forked: set[str] = set()
        self.keys: list[tuple[str, dict[str, Any]]] = []

    def log(self, code: str, message: str, table: str, key: str, column: str | None = None, stored: Any = None,
            derived: Any = None, gateway: str = LOG) -> None:
        self.emit(Difference(gateway, code, message, table, key, column, stored, derived))


def _walk(conn: Connection, out: _Out, sizes: set[int], stats: LogStats,
          gateway_ids: dict[tuple[str, str], int]) -> dict[int, bytes]:
    """Stream the entries in index order: contiguous, kind, ref and a batch entry's gateway and batch_seq as
    their bytes say; the roots at ``sizes``."""
    tree = StreamingRoot()
    roots: dict[int, bytes] = {0: tree.root()} if 0 in sizes else {}
    e = tlog_entries.c
    rows = conn.execute(select(e.idx, e.kind, e.ref, e.data, e.gateway_id, e.batch_seq).order_by(e.idx)
                        .execution_options(yield_per=2000))
    expected = 0
    for idx, kind, ref, data, gid, batch_seq in rows:
        data = bytes(data)
        if idx != expected:
            out.log("log_altered", f"log entries {expected}..{idx - 1} are missing", "tlog_entries", f"idx={expected}")
        expected = idx + 1
        tree.add(data)
        stats.entries += 1
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.log("log_altered", f"log entry {idx} is not JSON", "tlog_entries", f"idx={idx}")
            doc = {}
        real_kind = doc.get("kind") if isinstance(doc, dict) else None
        if real_kind != kind:
            out.log("log_altered", f"log entry {idx}: kind is {kind!r}, its bytes say {real_kind!r}", "tlog_entries",
                    f"idx={idx}", "kind", kind, real_kind)
        field = REF_FIELD.get(str(real_kind))
        if field is not None and ref != doc.get(field):
            out.log("log_altered", f"log entry {idx}: ref is {ref!r}, its bytes say {doc.get(field)!r}",
                    "tlog_entries", f"idx={idx}", "ref", ref, doc.get(field))
        want = (gateway_ids.get((doc.get("site"), doc.get("gateway"))), doc.get("batch_seq")) if (
            real_kind == "batch") else (None, None)
        if (gid, batch_seq) != want:
            out.emit(_lookup_altered(LOG, idx, (gid, batch_seq), want))
        if real_kind in ("key.enrolled", "key.rotated", "key.revoked"):
            out.keys.append((real_kind, doc))
        elif real_kind == "rejection" and doc.get("reason") == "fork" and doc.get("hash"):
            out.forked.add(doc["hash"])
        if tree.size in sizes:
            roots[tree.size] = tree.root()
    roots[tree.size] = tree.root()
    return roots


def _check_checkpoint(out: _Out, size: int, note: str, root: bytes | None, verifier: Verifier | None,
                      stats: LogStats) -> None:
    key = f"size={size}"
    try:
        if verifier is not None:
            cp = open_checkpoint(note, verifier)
            stats.checkpoints_signed += 1
        else:
            cp = Checkpoint.parse(split_note(note)[0])
    except NoteError as exc:
        out.log("log_altered", f"the signed checkpoint of size {size} does not verify: {exc}", "tlog_checkpoints",
                key)
        return
    if cp.size != size:
        out.log("log_altered", f"the checkpoint stored as size {size} is of size {cp.size}", "tlog_checkpoints", key)
    elif root is None:
        out.log("log_altered", f"the log has fewer entries than its signed checkpoint of size {size}: it was "
                f"truncated", "tlog_checkpoints", key)
    elif root != cp.root:
        out.log("log_altered", f"the stored entries no longer give the root of the signed checkpoint of size "
                f"{size}: entries were changed or removed", "tlog_checkpoints", key, "root", root.hex(),
                cp.root.hex())


def _logged_but_gone(conn: Connection, out: _Out) -> None:
    """``batch`` entries whose batch is not stored (unless moved aside as a fork, which the log also says)."""
    sb, e = sealed_batches.c, tlog_entries.c
    purged = purges(conn)
    for idx, data in conn.execute(
            select(e.idx, e.data).where(e.kind == "batch", ~exists().where(sb.hash == e.ref)).order_by(e.idx)):
        doc = orjson.loads(bytes(data))
        if doc.get("hash") in out.forked:
            continue
        purge = purged.get((str(doc.get("site")), str(doc.get("gateway"))))
        if purge is not None and isinstance(doc.get("batch_seq"), int) and doc["batch_seq"] <= purge.through_batch_seq:
            continue  # deleted by a two-party purge, which the log also records
        out.log("batch_missing", f"batch {doc.get('batch_seq')} ({doc.get('hash')}), logged as accepted in entry "
                f"{idx}, is not stored", "sealed_batches", f"batch_seq={doc.get('batch_seq')}",
                gateway=f"{doc.get('site')}/{doc.get('gateway')}")
    present = {(r.site, r.gateway, r.key_id) for r in conn.execute(
        select(gateways.c.site, gateways.c.gateway, gateway_keys.c.key_id)
        .join_from(gateway_keys, gateways, gateways.c.id == gateway_keys.c.gateway_id))}
    for kind, doc in out.keys:
        kid = doc.get("new_key_id") if kind == "key.rotated" else doc.get("key_id")
        if kind != "key.revoked" and (doc.get("site"), doc.get("gateway"), kid) not in present:
            out.log("key_altered", f"key {kid}: logged ({kind}) but no longer in gateway_keys", "gateway_keys",
                    str(kid), gateway=f"{doc.get('site')}/{doc.get('gateway')}")


class BatchEntry(NamedTuple):
    """A ``batch`` log entry: its index, its bytes and its look-up columns."""

    idx: int
    data: bytes
    gateway_id: int | None
    batch_seq: int | None


def batch_entries(conn: Connection, hashes: list[str]) -> dict[str, BatchEntry]:
    """The first ``batch`` log entry of each of ``hashes`` that has one.

    One query for many batches (:func:`blackbox.store.verify.check_chain` asks for each page of
    batches it reads) instead of one per batch.
    """
    e = tlog_entries.c
    out: dict[str, BatchEntry] = {}
    for ref, idx, data, gid, seq in conn.execute(select(e.ref, e.idx, e.data, e.gateway_id, e.batch_seq)
                                                 .where(e.kind == "batch", e.ref.in_(hashes)).order_by(e.idx)):
        out.setdefault(ref, BatchEntry(idx, bytes(data), gid, seq))
    return out


def check_batch_logged(conn: Connection, gid: int, label: str, batch_seq: int, hash_: str, received_at_us: int,
                       emit: Emit, known: dict[str, BatchEntry] | None = None) -> None:
    """The batch's ``batch`` entry exists and names the same gateway, batch_seq and arrival time, and its
    look-up columns are this gateway's and batch_seq.

    ``known``: entries read before (:func:`batch_entries`); a hash not among them is looked up.
    """
    entry = known.get(hash_) if known is not None else None
    if entry is None:
        entry = batch_entries(conn, [hash_]).get(hash_)
    key = f"batch_seq={batch_seq}"
    if entry is None:
        emit(Difference(label, "batch_unlogged", f"stored batch {batch_seq} ({hash_}) was never logged as accepted: "
                        f"it was put in the database after the fact", "sealed_batches", key, batch_seq=batch_seq))
        return
    idx, data = entry.idx, entry.data
    if (entry.gateway_id, entry.batch_seq) != (gid, batch_seq):
        emit(_lookup_altered(label, idx, (entry.gateway_id, entry.batch_seq), (gid, batch_seq), batch_seq))
    doc = orjson.loads(data)
    site, gateway = label.split("/", 1)
    stored = {"site": site, "gateway": gateway, "batch_seq": batch_seq, "received_at_us": received_at_us}
    for column, value in stored.items():
        if doc.get(column) != value:
            emit(Difference(label, "batch_altered", f"stored batch {batch_seq}: {column} is {value!r}, its log "
                            f"entry {idx} says {doc.get(column)!r}", "sealed_batches", key, column, value,
                            doc.get(column), batch_seq))


def _lookup_altered(gateway: str, idx: int, stored: tuple[Any, Any], derived: tuple[Any, Any],
                    batch_seq: int | None = None) -> Difference:
    """A batch entry's look-up columns (gateway id, batch_seq) are not what its bytes name."""
    return Difference(gateway, "log_altered", f"log entry {idx}: its look-up columns say gateway id {stored[0]}, "
                      f"batch {stored[1]}; its bytes name gateway id {derived[0]}, batch {derived[1]}",
                      "tlog_entries", f"idx={idx}", "gateway_id, batch_seq", list(stored), list(derived), batch_seq)


def check_key_rows(conn: Connection, gid: int, label: str, emit: Emit) -> None:
    """Each of the gateway's keys as its log entries say: enrolled with this public key, rotated, revoked."""
    gk, e = gateway_keys.c, tlog_entries.c
    rows = conn.execute(select(gk.key_id, gk.public_key_pem, gk.enrolled_by, gk.rotated_from, gk.valid_from_seq,
                               gk.revoked_at_us).where(gk.gateway_id == gid)).all()
    if not rows:
        return
    site, gateway = label.split("/", 1)
    logged: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, data in conn.execute(select(e.kind, e.data).where(
            e.ref.in_([r.key_id for r in rows]), e.kind.in_(["key.enrolled", "key.rotated", "key.revoked"]))
            .order_by(e.idx)):
        doc = orjson.loads(bytes(data))
        if (doc.get("site"), doc.get("gateway")) == (site, gateway):
            logged[(kind, str(doc.get("new_key_id") if kind == "key.rotated" else doc.get("key_id")))] = doc

    def report(kid: str, message: str, column: str | None = None, have: Any = None, want: Any = None) -> None:
        emit(Difference(label, "key_altered", f"key {kid}: {message}", "gateway_keys", kid, column, have, want))

    for r in rows:
        if r.enrolled_by == "operator" and r.rotated_from is None:
            entry = logged.get(("key.enrolled", r.key_id))
            if entry is None:
                report(r.key_id, "enrolled, but no enrolment of it was ever logged")
            elif _pem(entry.get("public_key_pem")) != _pem(r.public_key_pem):
                report(r.key_id, "its public key is not the one logged at its enrolment", "public_key_pem")
        else:
            entry = logged.get(("key.rotated", r.key_id))
            if entry is None:
                report(r.key_id, "came by rotation, but no rotation to it was ever logged")
            elif r.valid_from_seq is None or (entry.get("old_key_id"), entry.get("seq")) != (
                    r.rotated_from, Rotation.seq_bringing_in(r.valid_from_seq)):
                report(r.key_id, f"the logged rotation is from {entry.get('old_key_id')} at record "
                       f"{entry.get('seq')}", "rotated_from", r.rotated_from, entry.get("old_key_id"))
        revoked = logged.get(("key.revoked", r.key_id))
        logged_at = None if revoked is None else revoked.get("at_us")
        if logged_at != r.revoked_at_us:
            report(r.key_id, f"revoked_at_us is {r.revoked_at_us}, the log says "
                   f"{'never revoked' if revoked is None else logged_at}", "revoked_at_us", r.revoked_at_us,
                   logged_at)


def _pem(text: Any) -> str:
    return "".join(str(text or "").split())



def check_status(conn: Connection, gid: int, label: str, emit: Emit) -> None:
    """The gateway's status row is the last ``gateway.status`` change the log recorded for it.

    A store that had statuses before it logged them has nothing to compare until the next change.
    """
    g, e = gateways.c, tlog_entries.c
    row = conn.execute(select(g.site, g.gateway, g.status, g.status_reason, g.status_at_us).where(g.id == gid)).one()
    data = conn.execute(select(e.data).where(e.ref == status_ref(row.site, row.gateway), e.kind == "gateway.status")
                        .order_by(e.idx.desc()).limit(1)).scalar()
    if data is None:
        return
    doc = orjson.loads(bytes(data))
    logged = {"status": doc.get("state"), "status_reason": doc.get("reason"), "status_at_us": doc.get("at_us")}
    for column, want in logged.items():
        have = getattr(row, column)
        if have != want:
            emit(Difference(label, "gateway_altered", f"{column} is {have!r}, the last status change the log "
                            f"recorded says {want!r}", "gateways", label, column, have, want))


def logged_but_missing(conn: Connection, gateway_id: int | None = None,
                       after: int | None = None) -> dict[str, list[int]]:
    """Per gateway (``site/gateway``), the batch_seqs the transparency log accepted and the store no longer has.

    Batches moved aside as forks (a ``fork`` rejection with their hash) are not missing. With
    ``gateway_id``, only that gateway's batches (numbered above ``after`` if given): an index range
    (the entries' look-up columns, which ``store verify`` holds to their bytes), not the whole log.
    """
    sb, e, rj = sealed_batches.c, tlog_entries.c, rejections.c
    out: dict[str, list[int]] = defaultdict(list)
    stmt = select(e.ref, e.data).where(e.kind == "batch", ~exists().where(sb.hash == e.ref))
    if gateway_id is not None:
        stmt = stmt.where(e.gateway_id == gateway_id, *([e.batch_seq > after] if after is not None else []))
    rows = conn.execute(stmt)
    for ref, data in rows:
        doc = orjson.loads(bytes(data))
        if not isinstance(doc.get("batch_seq"), int):
            continue
        forked = conn.execute(select(rj.id).where(rj.hash == ref, rj.reason == "fork").limit(1)).first()
        if forked is None:
            out[f"{doc.get('site')}/{doc.get('gateway')}"].append(doc["batch_seq"])
    return {label: sorted(numbers) for label, numbers in out.items()}
