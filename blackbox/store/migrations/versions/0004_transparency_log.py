"""Transparency log: entries, complete-subtree hashes, the append lock row, signed checkpoints.

What a store held before this revision is written into the log, oldest first: every enrolled,
rotated and revoked key, every stored batch and every rejection, each with its own time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from blackbox.tlog.merkle import MemoryTree

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def upgrade() -> None:
    op.create_table(
        "tlog_entries",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment="Leaf index in the log, from 0."),
        sa.Column("kind", sa.String(length=32), nullable=False,
                  comment="batch, key.enrolled, key.rotated, key.revoked, rejection…"),
        sa.Column("ref", sa.String(length=128), nullable=True,
                  comment="Lookup key: the batch hash, key id or raw SHA-256 it records."),
        sa.Column("data", sa.LargeBinary(), nullable=False,
                  comment="The entry's canonical bytes; the leaf hash covers them."),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_tlog_entries")),
    )
    op.create_index(op.f("ix_tlog_entries_ref_kind"), "tlog_entries", ["ref", "kind"], unique=False)
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False, comment="Hash of the complete subtree of 2**level leaves."),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_tlog_nodes")),
    )
    op.create_table(
        "tlog_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False,
                  comment="Always 1: the row appends lock."),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False, comment="Root hash (hex) of the tree of this size."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tlog_state")),
    )
    op.create_table(
        "tlog_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("note", sa.Text(), nullable=False,
                  comment="The signed checkpoint (C2SP signed note) published for it."),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_tlog_checkpoints")),
    )
    _backfill(op.get_bind())


def _entry(kind: str, payload: dict[str, Any]) -> bytes:
    # the canonical form of blackbox.store.tlog.entry_bytes, spelled out so this revision never changes
    return orjson.dumps({"kind": kind, **payload}, option=orjson.OPT_SORT_KEYS)


def _backfill(conn: sa.Connection) -> None:
    """Log what the store already holds, in time order (ties: keys, then batches, then rejections)."""
    found: list[tuple[int, int, int, str, str | None, bytes]] = []  # (time, rank, id, kind, ref, data)
    keys = conn.execute(sa.text(
        "SELECT k.id, g.site, g.gateway, k.key_id, k.public_key_pem, k.enrolled_at_us, k.revoked_at_us, "
        "k.enrolled_by, k.rotated_from, k.valid_from_seq FROM gateway_keys k JOIN gateways g ON g.id = k.gateway_id"))
    for k in keys:
        where = {"site": k.site, "gateway": k.gateway}
        if k.enrolled_by == "rotation":
            found.append((k.enrolled_at_us, 0, k.id, "key.rotated", k.key_id, _entry("key.rotated", {
                **where, "old_key_id": k.rotated_from, "new_key_id": k.key_id,
                "seq": None if k.valid_from_seq is None else k.valid_from_seq - 1, "at_us": k.enrolled_at_us})))
        else:
            found.append((k.enrolled_at_us, 0, k.id, "key.enrolled", k.key_id, _entry("key.enrolled", {
                **where, "key_id": k.key_id, "public_key_pem": k.public_key_pem, "at_us": k.enrolled_at_us})))
        if k.revoked_at_us is not None:
            found.append((k.revoked_at_us, 0, k.id, "key.revoked", k.key_id, _entry("key.revoked", {
                **where, "key_id": k.key_id, "at_us": k.revoked_at_us})))
    batches = conn.execute(sa.text(
        "SELECT b.id, g.site, g.gateway, b.batch_seq, b.hash, b.received_at_us FROM sealed_batches b "
        "JOIN gateways g ON g.id = b.gateway_id"))
    for b in batches:
        found.append((b.received_at_us, 1, b.id, "batch", b.hash, _entry("batch", {
            "site": b.site, "gateway": b.gateway, "batch_seq": b.batch_seq, "hash": b.hash,
            "received_at_us": b.received_at_us})))
    rejected = conn.execute(sa.text(
        "SELECT id, site, gateway, batch_seq, hash, reason, raw_sha256, received_at_us FROM rejections"))
    for r in rejected:
        found.append((r.received_at_us, 2, r.id, "rejection", r.raw_sha256, _entry("rejection", {
            "site": r.site, "gateway": r.gateway, "batch_seq": r.batch_seq, "hash": r.hash, "reason": r.reason,
            "raw_sha256": r.raw_sha256, "at_us": r.received_at_us})))
    found.sort(key=lambda x: x[:3])
    tree = MemoryTree()
    entries = []
    for at, _rank, _id, kind, ref, data in found:
        entries.append({"idx": tree.append(data), "kind": kind, "ref": ref, "data": data, "created_at_us": at})
    if entries:
        conn.execute(sa.text("INSERT INTO tlog_entries (idx, kind, ref, data, created_at_us) "
                             "VALUES (:idx, :kind, :ref, :data, :created_at_us)"), entries)
        conn.execute(sa.text("INSERT INTO tlog_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
                     [{"level": lvl, "idx": i, "hash": h} for lvl, hashes in enumerate(tree.levels)
                      for i, h in enumerate(hashes)])
    conn.execute(sa.text("INSERT INTO tlog_state (id, size, root) VALUES (1, :size, :root)"),
                 {"size": tree.size, "root": tree.root().hex() if tree.size else EMPTY_ROOT})


def downgrade() -> None:
    op.drop_table("tlog_checkpoints")
    op.drop_table("tlog_state")
    op.drop_table("tlog_nodes")
    op.drop_index(op.f("ix_tlog_entries_ref_kind"), table_name="tlog_entries")
    op.drop_table("tlog_entries")
