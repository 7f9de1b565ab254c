"""The store's transparency log: an append-only Merkle log of everything the store decided.

Every accepted batch, every key enrolment, rotation and revocation and every rejection is one
entry, appended **in the same transaction** as the change it records, so the log and the tables
cannot disagree after a crash. Entries are canonical bytes (:mod:`blackbox.tlog.entries`: JSON
with sorted keys, no spaces, UTF-8) whose RFC 6962 leaf hash is the tree's leaf; the hashes of complete
subtrees are kept in ``tlog_nodes``, so an append writes about two rows and every proof reads
``O(log n)`` of them (:mod:`blackbox.tlog.merkle`).

Appends are serialised by the ``tlog_state`` row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite
an ``UPDATE`` of it first, which takes the database's write lock), so several store workers append
one after the other and every tree head extends the previous one.

API for other parts of the store (joint control records its two-party actions this way)::

    from blackbox.store.tlog import append_entry
    with engine.begin() as conn:
        ...                                              # the change itself
        pos = append_entry(conn, "kind.name", {"what": "happened"}, ref="lookup key")
    # pos.index: the entry's leaf index; pos.size, pos.root: the tree head right after it

``kind`` is a short dotted name (``KINDS`` lists the store's own); the payload is a JSON object
of strings, integers, booleans, lists and objects (no floats: their text form is not canonical),
without a ``kind`` key. :class:`TransparencyLog` reads the log: tree heads, signed checkpoints,
inclusion and consistency proofs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, insert, select

from blackbox.model import now_us
from blackbox.seal import load_private_key
from blackbox.store.schema import tlog_checkpoints, tlog_entries, tlog_state
from blackbox.tlog.entries import batch_entry, entry_bytes
from blackbox.tlog.merkle import (
    HashReader,
    Node,
    ProofError,
    append_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    subtrees,
    tree_hash,
)
from blackbox.tlog.note import Checkpoint, Signer

KINDS = {
    "batch": "a sealed batch was accepted and stored (site, gateway, batch_seq, hash, received_at_us)",
    "key.enrolled": "an operator enrolled a gateway key (site, gateway, key_id, public_key_pem, at_us)",
    "key.rotated": "a gateway's chain rotated its key (site, gateway, old_key_id, new_key_id, seq, at_us)",
    "key.revoked": "an operator revoked a gateway key (site, gateway, key_id, at_us)",
    "rejection": "a message was refused (site, gateway as claimed, batch_seq, hash, reason, raw_sha256, at_us)",
    "gateway.status": "a gateway's status changed, from its status topic (site, gateway, state, reason, at_us; "
    "ref: status_ref)",
    "approver.enrolled": "a factory QA or regulator key was enrolled for a site (site, role, key_id, "
    "public_key_pem, at_us)",
    "spec.received": "a specification version came in (site, spec_id, version, sha256, status approved or refused, "
    "detail, source, at_us)",
    "joint.action": "a two-party action was carried out or refused (action, site, gateway, sha256 of its document, "
    "outcome, detail, actor, signers, at_us)",
}
"""The entries the store writes itself (other kinds may be appended through :func:`append_entry`)."""


class LogError(Exception):
    """A proof or checkpoint was asked for that the log cannot give (an unknown batch, a size beyond it)."""


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Where an entry landed: its leaf index and the tree head (size, root) right after it."""

    index: int
    size: int
    root: bytes
    proof: tuple[bytes, ...] | None = field(default=None, compare=False)
    """The entry's inclusion proof in that tree, when the append computed it (``None``: read it from the log)."""


def status_ref(site: str, gateway: str) -> str:
    """The lookup key of a gateway's ``gateway.status`` entries (site and gateway ids may be 128 characters each)."""
    return hashlib.sha256(f"{site}/{gateway}".encode()).hexdigest()


def _reader(conn: Connection) -> HashReader:
    def read(nodes: Sequence[Node]) -> list[bytes]:
        found = _read_nodes(conn, nodes)
        return [found[x] for x in nodes]

    return read


def _read_nodes(conn: Connection, nodes: Sequence[Node]) -> dict[Node, bytes]:
    """The stored hashes of ``nodes`` (plain SQL: proofs and appends read them all the time)."""
    found: dict[Node, bytes] = {}
    for i in range(0, len(nodes), 400):  # bounded statement size, whatever the tree
        chunk = nodes[i : i + 400]
        rows = conn.exec_driver_sql(_sql(conn).select_nodes(len(chunk)), tuple(v for node in chunk for v in node))
        found.update(((int(r[0]), int(r[1])), bytes(r[2])) for r in rows)
    missing = [n for n in nodes if n not in found]
    if missing:
        raise LogError(f"the log's node table lacks subtree {missing[0]}: the log is damaged")
    return found


def append_entry(conn: Connection, kind: str, payload: dict[str, Any], *, ref: str | None = None,
                 at_us: int | None = None) -> LogPosition:
    """Append one entry inside the caller's transaction; returns its index and the new tree head.

    Takes the log's lock (the ``tlog_state`` row) until the caller's transaction ends: append as
    late in the transaction as possible.
    """
    return _append(conn, kind, entry_bytes(kind, payload), ref, now_us() if at_us is None else at_us)


def _append(conn: Connection, kind: str, data: bytes, ref: str | None, at_us: int,
            batch: tuple[int, int] | None = None) -> LogPosition:
    """Append ``data``; ``batch``: a batch entry's (gateway id, batch_seq), for its look-up columns."""
    sql = _sql(conn)
    if sql.lock:
        conn.exec_driver_sql(sql.lock)  # lock first, then read: no other writer appends until we commit
    size, root_hex = conn.exec_driver_sql(sql.head).one()
    known = _frontier(conn, size, root_hex)
    created = append_nodes(size, leaf_hash(data), lambda nodes: [known[x] for x in nodes])
    new = {**known, **dict(created)}
    root = tree_hash(size + 1, lambda nodes: [new[x] for x in nodes])
    entry = (size, kind, ref, data, at_us, *(batch or (None, None)))
    nodes = tuple(v for (lvl, i), h in created for v in (lvl, i, h))
    state = (size + 1, root.hex())
    if sql.postgresql:  # one round trip for the three writes
        conn.exec_driver_sql(sql.writes(len(created)), (*entry, *nodes, *state))
    else:
        conn.exec_driver_sql(sql.entry, entry)
        conn.exec_driver_sql(sql.nodes(len(created)), nodes)
        conn.exec_driver_sql(sql.state, state)
    _remember(size + 1, root.hex(), {node: new[node] for node in subtrees(0, size + 1)})
    # the last leaf's audit path is the frontier before it: no read, the receipt needs no round trip
    proof = inclusion_proof(size, size + 1, lambda nodes: [new[x] for x in nodes])
    return LogPosition(size, size + 1, root, tuple(proof))


def append_batch(conn: Connection, gateway_id: int, site: str, gateway: str, batch_seq: int, hash_: str,
                 received_at_us: int) -> LogPosition:
    """Append the entry of an accepted batch (:func:`blackbox.tlog.entries.batch_entry`) of gateway ``gateway_id``
    (``site``/``gateway``)."""
    return _append(conn, "batch", batch_entry(site, gateway, batch_seq, hash_, received_at_us), hash_,
                   received_at_us, (gateway_id, batch_seq))


@dataclass(frozen=True)
class _Statements:
    """The append's SQL for one DBAPI parameter style (plain SQL: SQLAlchemy's statement building
    costs more than the append itself)."""

    mark: str
    postgresql: bool

    @property
    def lock(self) -> str | None:
        # SQLite: a write takes the database's write lock (a read first could not upgrade safely)
        return None if self.postgresql else "UPDATE tlog_state SET size = size WHERE id = 1"

    @property
    def head(self) -> str:
        return "SELECT size, root FROM tlog_state WHERE id = 1" + (" FOR UPDATE" if self.postgresql else "")

    @property
    def entry(self) -> str:
        return (f"INSERT INTO tlog_entries (idx, kind, ref, data, created_at_us, gateway_id, batch_seq) "
                f"VALUES ({', '.join([self.mark] * 7)})")

    @property
    def state(self) -> str:
        return f"UPDATE tlog_state SET size = {self.mark}, root = {self.mark} WHERE id = 1"

    def nodes(self, n: int) -> str:
        row = f"({self.mark}, {self.mark}, {self.mark})"
        return f"INSERT INTO tlog_nodes (level, idx, hash) VALUES {', '.join([row] * n)}"

    def writes(self, n: int) -> str:
        """PostgreSQL: entry, nodes and state in one statement (data-modifying CTEs)."""
        return f"WITH e AS ({self.entry}), n AS ({self.nodes(n)}) {self.state}"

    def select_nodes(self, n: int) -> str:
        cond = f"(level = {self.mark} AND idx = {self.mark})"
        return f"SELECT level, idx, hash FROM tlog_nodes WHERE {' OR '.join([cond] * n)}"


_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _sql(conn: Connection) -> _Statements:
    style = conn.dialect.paramstyle
    if style not in _MARKS:
        raise LogError(f"the log cannot run on a database driver with parameter style {style!r}")
    return _Statements(_MARKS[style], conn.dialect.name == "postgresql")


_FRONTIERS: dict[tuple[int, str], dict[Node, bytes]] = {}
"""The frontier (complete subtrees) of the last trees this process appended to, by (size, root).

The root commits to every entry, so a frontier found under the (size, root) read from the locked
state row is the right one whatever the database or worker; a transaction rolled back leaves a
(size, root) the database never had, which is simply never asked for.
"""
_FRONTIERS_LOCK = threading.Lock()


def _remember(size: int, root_hex: str, frontier: dict[Node, bytes]) -> None:
    with _FRONTIERS_LOCK:
        if len(_FRONTIERS) >= 16:
            _FRONTIERS.pop(next(iter(_FRONTIERS)))
        _FRONTIERS[(size, root_hex)] = frontier


def _frontier(conn: Connection, size: int, root_hex: str) -> dict[Node, bytes]:
    with _FRONTIERS_LOCK:
        cached = _FRONTIERS.get((size, root_hex))
    if cached is not None:
        return cached
    return _read_nodes(conn, subtrees(0, size))


def load_signer(key_file: str | Path, origin: str) -> Signer:
    """The store's key (an Ed25519 PEM file, ``blackbox store keys init``) as the log's note signer."""
    key: Ed25519PrivateKey = load_private_key(key_file)
    return Signer(origin, key)


class TransparencyLog:
    """Reads the log of a store: tree heads, signed checkpoints, proofs."""

    def __init__(self, engine: Engine, signer: Signer | None = None) -> None:
        self.engine = engine
        self.signer = signer

    def head(self, conn: Connection | None = None) -> tuple[int, bytes]:
        """``(size, root)`` of the log now."""
        if conn is None:
            with self.engine.connect() as c:
                return self.head(c)
        row = conn.execute(select(tlog_state.c.size, tlog_state.c.root).where(tlog_state.c.id == 1)).one()
        return int(row.size), bytes.fromhex(row.root)

    def root(self, size: int, conn: Connection | None = None) -> bytes:
        """The root of the tree of the first ``size`` entries (from the stored nodes)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.root(size, c)
        current, _ = self.head(conn)
        if not 0 <= size <= current:
            raise LogError(f"the log has {current} entries, not {size}")
        return tree_hash(size, _reader(conn))

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        """The (unsigned) checkpoint of the tree of ``size`` entries (default: now)."""
        if self.signer is None:
            raise LogError("no store key: a checkpoint cannot be signed")
        with self.engine.connect() as conn:
            if size is None:
                size, root = self.head(conn)
            else:
                root = self.root(size, conn)
        return Checkpoint(self.signer.name, size, root)

    def signed_checkpoint(self, size: int | None = None, *, record: bool = False) -> str:
        """The checkpoint signed with the store key; ``record``: keep it in ``tlog_checkpoints``."""
        cp = self.checkpoint(size)
        if self.signer is None:
            raise RuntimeError("internal error: expected self.signer is not None (checkpoint() refuses without one)")
        note = cp.sign(self.signer)
        if record:
            with self.engine.begin() as conn:
                exists = conn.execute(select(tlog_checkpoints.c.size).where(tlog_checkpoints.c.size == cp.size)).first()
                if exists is None:
                    conn.execute(insert(tlog_checkpoints).values(size=cp.size, note=note, created_at_us=now_us()))
        return note

    def inclusion(self, index: int, size: int, conn: Connection | None = None) -> list[bytes]:
        if conn is None:
            with self.engine.connect() as c:
                return self.inclusion(index, size, c)
        current, _ = self.head(conn)
        if not 0 <= index < size <= current:
            raise LogError(f"no entry {index} in a tree of {size} (the log has {current} entries)")
        try:
            return inclusion_proof(index, size, _reader(conn))
        except ProofError as exc:
            raise LogError(str(exc)) from None

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        with self.engine.connect() as conn:
            current, _ = self.head(conn)
            if not 0 < old_size <= new_size <= current:
                raise LogError(f"no consistency proof from size {old_size} to {new_size} (the log has {current} "
                               f"entries)")
            return consistency_proof(old_size, new_size, _reader(conn))

    def find(self, kind: str, ref: str, conn: Connection | None = None) -> tuple[int, bytes] | None:
        """``(index, entry bytes)`` of the first entry of ``kind`` with lookup key ``ref``."""
        if conn is None:
            with self.engine.connect() as c:
                return self.find(kind, ref, c)
        e = tlog_entries.c
        row = conn.execute(select(e.idx, e.data).where(e.ref == ref, e.kind == kind).order_by(e.idx).limit(1)).first()
        return None if row is None else (int(row.idx), bytes(row.data))

    def entry(self, index: int) -> bytes | None:
        with self.engine.connect() as conn:
            data = conn.execute(select(tlog_entries.c.data).where(tlog_entries.c.idx == index)).scalar()
        return None if data is None else bytes(data)
