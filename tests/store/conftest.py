"""The store tests' fixtures: defined in ``store_fixtures`` and ``web_support``, where mypy checks them
(to mypy every conftest.py is a module named ``conftest``: it checks only tests/conftest.py)."""

from store_fixtures import empty_engine, engine, pg_database, pg_engine, sqlite_engine  # noqa: F401 - fixtures
from web_support import web_client, web_store  # noqa: F401 - fixtures of the web window's tests
