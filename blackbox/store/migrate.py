"""Schema migrations: run Alembic programmatically against the store's database.

The migration scripts live in ``blackbox/store/migrations`` (inside the package, so an installed
store can migrate itself without an ``alembic.ini``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from blackbox.store.db import make_engine
from blackbox.store.partitions import include_name
from blackbox.store.schema import metadata

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration bound to ``engine`` (the URL never goes through ini interpolation)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (``alembic upgrade head``).

    A database made by :func:`blackbox.store.schema.create_schema` (every table present, no
    Alembic version) is stamped first: as the latest revision if it already matches the schema,
    else as the initial one, then upgraded.
    """
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        cfg = alembic_config(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": include_name})
            current = context.get_current_revision()
            existing = set(inspect(conn).get_table_names())
            made_by_create_schema = current is None and existing and set(metadata.tables) <= existing
            up_to_date = made_by_create_schema and not compare_metadata(context, metadata)
        if made_by_create_schema:
            command.stamp(cfg, "head" if up_to_date else "0001")
        command.upgrade(cfg, revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
