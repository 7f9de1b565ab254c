"""Alembic environment of the store: online migrations on the engine given by migrate.py.

Run from code (:func:`blackbox.store.migrate.upgrade_schema`), or from the command line with
``alembic -x url=postgresql+psycopg://... upgrade head`` and ``script_location`` pointing here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from blackbox.store.db import make_engine
from blackbox.store.partitions import include_name
from blackbox.store.schema import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    owned = False
    if not isinstance(engine, Engine):
        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no database: pass -x url=... or set sqlalchemy.url")
        engine = make_engine(url)
        owned = True
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                include_name=include_name,  # the readings' partitions are not in the metadata
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported by the store")
run_migrations_online()
