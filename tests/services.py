"""Access to the machine's real services (Mosquitto, PostgreSQL) for tests.

When a service is missing, a test fails under CI (``CI=true``) and is skipped elsewhere: a
developer without PostgreSQL can still run the rest, but CI can never pass without it.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
PG_ADMIN_URL = os.environ.get("BLACKBOX_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""The database through which :func:`fresh_postgres_database` creates and drops its own."""
PG_HOST = os.environ.get("BLACKBOX_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BLACKBOX_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("BLACKBOX_TEST_PGUSER", "postgres")
PG_ADMIN_DB = os.environ.get("BLACKBOX_TEST_PGDATABASE", "test")
"""Where the store tests' per-session database is created (tests/store/store_fixtures.py)."""


def unavailable(what: str) -> NoReturn:
    """Skip the test on a developer machine; fail it under CI, where a skip would hide a gap."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI and is not available")
    pytest.skip(f"{what} is not available")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_mosquitto() -> tuple[str, int]:
    if not port_open(MQTT_HOST, MQTT_PORT):
        unavailable(f"Mosquitto on {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database for one test run and drop it afterwards; yields its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bb_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive TCP ports that nothing listens on, below the kernel's ephemeral range.

    For services that take ``port + k`` (the store's workers' metrics). A port inside the ephemeral
    range can be taken meanwhile by any client connection of the machine (a PostgreSQL or MQTT
    client of another test): CI once lost a worker to "Address already in use" that way. So the
    block is picked between 10000 and the start of ``ip_local_port_range``, which the kernel never
    hands out on its own. Each port is bound once to check it; a block with a taken port is skipped.
    """
    try:
        ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768  # Linux's default
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, max(10001, ephemeral_start - count))
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports below {ephemeral_start} on {host}")
