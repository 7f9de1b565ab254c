"""Real services in the store tests: skip when one is missing, but fail under CI (``CI=true``)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(what: str) -> NoReturn:
    """Skip, or fail under CI: there the real part must be present."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: the real service is required)")
    pytest.skip(what)
