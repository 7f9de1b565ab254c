"""A PostgreSQL database made for one benchmark run and dropped after it (shared by the benchmarks)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

PG_ADMIN = os.environ.get("BLACKBOX_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """Create ``bb_bench_<random>`` through the admin database; yields its URL, drops it at the end."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"bb_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
