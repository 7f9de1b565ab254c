"""A batch entry of the transparency log found by its gateway and batch_seq: ``tlog_entries`` gains
``gateway_id`` and ``batch_seq`` (null for other kinds), filled here from each batch entry's bytes,
and an index on them. Whether a gateway's newest stored batch was followed by batches the log
accepted and the store no longer holds (every trace report of a gateway's newest batches) was
answered by reading every batch entry of the whole log; it is now an index range of that gateway.
``store verify`` holds both columns to the entry's bytes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PAGE = 5_000
"""Batch entries read and updated per round trip."""


def upgrade() -> None:
    gid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    with op.batch_alter_table("tlog_entries") as batch:
        batch.add_column(sa.Column("gateway_id", gid, nullable=True,
                                   comment="A batch entry's gateway, as its bytes name it (null for other kinds): "
                                           "a gateway's entries looked up without reading the whole log; store "
                                           "verify holds it to the bytes."))
        batch.add_column(sa.Column("batch_seq", sa.BigInteger(), nullable=True,
                                   comment="A batch entry's batch_seq, as its bytes say."))
    conn = op.get_bind()
    ids = {(site, gateway): i for i, site, gateway in conn.execute(sa.text("SELECT id, site, gateway FROM gateways"))}
    after = -1
    while True:
        rows = conn.execute(sa.text("SELECT idx, data FROM tlog_entries WHERE kind = 'batch' AND idx > :after "
                                    "ORDER BY idx LIMIT :n"), {"after": after, "n": PAGE}).all()
        if not rows:
            break
        after = rows[-1].idx
        updates = []
        for idx, data in rows:
            doc = orjson.loads(bytes(data))
            seq = doc.get("batch_seq")
            updates.append({"idx": idx, "gid": ids.get((doc.get("site"), doc.get("gateway"))),
                            "seq": seq if isinstance(seq, int) else None})
        conn.execute(sa.text("UPDATE tlog_entries SET gateway_id = :gid, batch_seq = :seq WHERE idx = :idx"), updates)
    op.create_index(op.f("ix_tlog_entries_gateway_id_batch_seq"), "tlog_entries", ["gateway_id", "batch_seq"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tlog_entries_gateway_id_batch_seq"), "tlog_entries")
    with op.batch_alter_table("tlog_entries") as batch:
        batch.drop_column("batch_seq")
        batch.drop_column("gateway_id")
