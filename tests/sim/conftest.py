"""Fixtures of the simulator tests."""

from __future__ import annotations

import pytest
from sim_helpers import run_batches

from blackbox.sim.process import ProcessModel, Snapshot


@pytest.fixture(scope="session")
def default_batch() -> list[Snapshot]:
    """One batch at the reference line's default durations (about 22,000 one-second steps)."""
    return run_batches(ProcessModel(seed=7, batches=1))
