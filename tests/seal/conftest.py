"""Fixtures for the sealing tests: keys, a varied set of records, the usual seal arguments."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading
from blackbox.seal import GENESIS_HASH

from .helpers import CONFIG_HASH, T0, make_records


@pytest.fixture(scope="session")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def records() -> list[Reading | Event]:
    return make_records()


@pytest.fixture
def seal_args(key: Ed25519PrivateKey) -> dict[str, Any]:
    return {
        "site": "SH-PD-01",
        "gateway": "gw-1",
        "key": key,
        "batch_seq": 1,
        "prev_hash": GENESIS_HASH,
        "config_hash": CONFIG_HASH,
        "sealed_at_us": T0 + 10_000_000,
    }
