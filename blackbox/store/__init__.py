"""The regulator's traceability store (SPEC §10): ingest, schema and migrations, trace queries.

* :mod:`~blackbox.store.schema`   tables (SQLAlchemy Core; SQLite and PostgreSQL)
* :mod:`~blackbox.store.migrate`  Alembic migrations, run programmatically
* :mod:`~blackbox.store.db`       engine construction (SQLite pragmas)
* :mod:`~blackbox.store.derive`   the rows a sealed batch yields (ingest inserts them, verify compares)
* :mod:`~blackbox.store.ingest`   verify, check the chain, insert idempotently, record rejections
* :mod:`~blackbox.store.service`  the MQTT side: subscribe, ingest, acknowledge after commit
* :mod:`~blackbox.store.trace`    trace a batch forward, a supplier lot backward
* :mod:`~blackbox.store.integrity` the integrity verdict of a batch's sealed records
* :mod:`~blackbox.store.report`   the report model and its printable text
"""

from blackbox.store.db import make_engine, open_store
from blackbox.store.ingest import REASONS, EnrollmentError, Ingestor, IngestResult
from blackbox.store.migrate import upgrade_schema
from blackbox.store.report import TraceReport, render_text
from blackbox.store.schema import create_schema, metadata
from blackbox.store.service import StoreService, run_store
from blackbox.store.trace import BatchNotFound, reverse_lot, trace_batch

__all__ = [
    "REASONS",
    "BatchNotFound",
    "EnrollmentError",
    "IngestResult",
    "Ingestor",
    "StoreService",
    "TraceReport",
    "create_schema",
    "make_engine",
    "metadata",
    "open_store",
    "render_text",
    "reverse_lot",
    "run_store",
    "trace_batch",
    "upgrade_schema",
]
