"""The early-warning rules warn before the limit on the simulator's drift scenarios and stay quiet on
a normal batch: config/demo.yaml's rules as the demo sees the line, and config/cream-line.yaml's plant rules
(benchmarks/early_warning.py prints the full figures over several seeds and 20 normal batches)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from blackbox.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("early_warning", ROOT / "benchmarks" / "early_warning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


EW = _benchmark()
CFG: Config = load_config(ROOT / "config" / "demo.yaml").config
REGIMES = {
    "demo": EW.Regime("demo", list(CFG.rules), EW.DEMO_POLL_S, 1.0 / EW.DEMO_SPEED),
    "plant": EW.Regime("plant", list(load_config(EW.PLANT_CONFIG).config.rules), 1.0, 1.0),
}


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("name", EW.TARGETS)
def test_drift_is_warned_early_enough(regime: str, name: str) -> None:
    out = EW.scenario(name, 1, REGIMES[regime], CFG)
    assert out.limit_at is not None, "the scenario never reached its limit"
    assert out.warning_at is not None, "no early warning"
    assert out.lead >= EW.TARGETS[name]


@pytest.mark.parametrize("regime", REGIMES)
def test_a_normal_batch_raises_no_warning(regime: str) -> None:
    out, _ = EW.normal_batches(1, REGIMES[regime], CFG, EW.TUNING_NORMAL_SEED)
    assert out.warnings == {}
    assert out.evaluations > 0
