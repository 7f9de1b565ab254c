"""Sealed batches looked up by hash alone: the index on (gateway_id, hash) becomes one on (hash,
gateway_id), which serves both look-ups. The transparency log's entries name a batch by its hash
only, so the check for logged batches that are no longer stored (every trace report of a gateway's
newest batches, ``store verify``, ``store gateways``) probed the whole old index once per entry:
136 ms among 4,000 sealed batches without planner statistics, growing with the store.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_sealed_batches_hash_gateway_id"), "sealed_batches", ["hash", "gateway_id"])
    op.drop_index(op.f("ix_sealed_batches_gateway_id_hash"), "sealed_batches")


def downgrade() -> None:
    op.create_index(op.f("ix_sealed_batches_gateway_id_hash"), "sealed_batches", ["gateway_id", "hash"])
    op.drop_index(op.f("ix_sealed_batches_hash_gateway_id"), "sealed_batches")
