"""Helpers of the simulator tests (a module with a unique name: conftest modules are not importable)."""

from __future__ import annotations

import pytest

from blackbox.sim.process import ProcessModel, Snapshot
from blackbox.sim.recipe import IDLE, PHASES

SHORT = {IDLE: 5.0, **dict.fromkeys(PHASES, 30.0), "dispense": 60.0}
"""Durations of a short batch (simulated seconds): every phase, 305 s in all."""


def run_batches(model: ProcessModel, *, extra_idle: float = 10.0) -> list[Snapshot]:
    """Step ``model`` until its batches are done, plus ``extra_idle`` seconds; every snapshot."""
    snaps = [model.snapshot]
    while not model.finished:
        snaps.append(model.step())
        assert model.step_no < 1_000_000, "the model never finished"
    for _ in range(int(extra_idle)):
        snaps.append(model.step())
    return snaps


def phases_of(snaps: list[Snapshot]) -> list[str]:
    """The phase sequence, consecutive repeats collapsed."""
    seq: list[str] = []
    for s in snaps:
        phase = s["EM-01.phase"]
        assert isinstance(phase, str)
        if not seq or seq[-1] != phase:
            seq.append(phase)
    return seq


@pytest.fixture(scope="session")
def default_batch() -> list[Snapshot]:
    """One batch at the reference line's default durations (about 22,000 one-second steps)."""
    return run_batches(ProcessModel(seed=7, batches=1))
