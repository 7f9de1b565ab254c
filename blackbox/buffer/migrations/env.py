"""Alembic environment of the buffer: run from :func:`blackbox.buffer.upgrade.upgrade` on its connection.

That connection is already inside the upgrade's one ``BEGIN IMMEDIATE`` transaction, so Alembic
neither begins nor commits: every revision and the ``alembic_version`` update are committed, or
rolled back, together by the caller.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection

from blackbox.buffer.schema import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    applied = config.attributes.get("applied")
    if not isinstance(connection, Connection) or not isinstance(applied, list):
        raise RuntimeError("the buffer's revisions run from blackbox.buffer.upgrade, on its connection")

    def _applied(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any],
                 run_args: Mapping[str, Any]) -> None:
        if not step.is_stamp:
            applied.append(step.up_revision_id)

    context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True,
                      transaction_per_migration=False, on_version_apply=_applied)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported by the buffer")
run_migrations_online()
