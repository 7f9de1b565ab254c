"""Rule engine cost: microseconds per reading per rule at 2,000 tags, per rule family and mixed.

Each family: one rule of that family on each of 2,000 tags, fed poll cycles of 2,000 readings (one
simulated second apart) of a healthy line: 70 +/- 0.05 (normal noise), well inside the limits. The
control-limit rules are given that sigma, so SPC run rules fire at their natural rate (a Western
Electric / Nelson set false-alarms every few dozen points of white noise): their cost includes
the events. Mixed: five rules per tag (threshold, trend, EWMA,
SPC with all twelve run rules, frozen). Also the per-commit cost of ``state()`` (the agent saves
it with every buffer commit, as JSON) and of a ``tick``. Targets: < 5 us per reading per rule, and
state() plus its JSON <= 0.5 ms per commit for the mixed engine's 10,000 rules. Each figure is
the best of three runs, the usual way to measure a cost on a machine that other work shares.

Usage: python benchmarks/rules.py [--cycles 50]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import TypeAdapter

from blackbox.config import Rule, TagConfig
from blackbox.model import Sample
from blackbox.rules import RuleEngine

TAGS = 2000
US = 1_000_000
TARGET_US = 5.0
STATE_TARGET_MS = 0.5
ALL_CHECKS = ["we1", "we2", "we3", "we4", "nelson1", "nelson2", "nelson3", "nelson4", "nelson5", "nelson6",
              "nelson7", "nelson8"]
FAMILIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "threshold": lambda t: {"type": "threshold", "tag": t, "deadband": 0.2},
    # windows shorter than the run, so that readings also leave them (the steady state)
    "trend": lambda t: {"type": "trend", "tag": t, "window": 30, "min_samples": 10, "horizon": 600},
    "rate_of_change": lambda t: {"type": "rate_of_change", "tag": t, "max_rise": 5, "max_fall": 5, "window": 20},
    "frozen": lambda t: {"type": "frozen", "tag": t, "samples": 30},
    "stale": lambda t: {"type": "stale", "tag": t, "intervals": 3},
    "bad_quality": lambda t: {"type": "bad_quality", "tag": t, "samples": 2},
    "spc (12 run rules)": lambda t: {"type": "spc", "tag": t, "centre": 70, "sigma": 0.05, "checks": ALL_CHECKS},
    "ewma": lambda t: {"type": "ewma", "tag": t, "centre": 70, "sigma": 0.05, "lam": 0.1, "L": 3},
    "cusum": lambda t: {"type": "cusum", "tag": t, "centre": 70, "sigma": 0.05, "k": 0.5, "h": 5},
    "batch (peak)": lambda t: {"type": "batch", "tag": t, "measure": "peak", "phase": "emulsify"},
}
MIXED = ["threshold", "trend", "ewma", "spc (12 run rules)", "frozen"]


def tags() -> dict[str, TagConfig]:
    return {f"PLC-{i:04d}.value": TagConfig.model_validate({
        "name": f"PLC-{i:04d}.value", "address": "x", "type": "float", "category": "process", "unit": "U",
        "limits": [{"ll": 55, "l": 60, "h": 80, "hh": 85}]}) for i in range(TAGS)}


def cycles(n: int) -> list[list[Sample]]:
    rng = random.Random(1)
    names = list(tags())
    return [[Sample(name, round(70 + rng.gauss(0, 0.05), 3)) for name in names] for _ in range(n)]


def measure(rules: list[dict[str, Any]], data: list[list[Sample]], repeats: int = 3) -> tuple[float, RuleEngine]:
    """Microseconds per reading per rule: the best of ``repeats`` fresh runs (the machine may be shared)."""
    adapter: TypeAdapter[Rule] = TypeAdapter(Rule)
    best = float("inf")
    for _ in range(repeats):
        engine = RuleEngine([adapter.validate_python(r) for r in rules], tags())
        t0 = 1_800_000_000 * US
        engine.evaluate(data[0], t0, "emulsify", "FC-050")  # warm up: scope, caches
        started = time.perf_counter()
        for i, cycle in enumerate(data[1:], start=1):
            engine.evaluate(cycle, t0 + i * US, "emulsify", "FC-050")
        best = min(best, time.perf_counter() - started)
    return best / ((len(data) - 1) * len(rules)) * 1e6, engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    args = ap.parse_args()
    data = cycles(args.cycles + 1)
    names = list(tags())
    print(f"rule engine, {TAGS} tags, {args.cycles} poll cycles of {TAGS} readings (target < {TARGET_US:g} us "
          "per reading per rule)")
    worst = 0.0
    for family, make in FAMILIES.items():
        us, _ = measure([make(t) for t in names], data)
        worst = max(worst, us)
        print(f"  {family:<20} {us:6.2f} us per reading per rule")
    us, engine = measure([FAMILIES[f](t) for t in names for f in MIXED], data)
    worst = max(worst, us)
    print(f"  {'mixed, 5 per tag':<20} {us:6.2f} us per reading per rule ({len(MIXED) * TAGS} rules)")
    started = time.perf_counter()
    for _ in range(20):
        state = engine.state()
        size = len(orjson.dumps(state))
    state_ms = (time.perf_counter() - started) / 20 * 1000
    print(f"  state() of the mixed engine: {state_ms:.1f} ms per commit (target <= {STATE_TARGET_MS} ms), "
          f"{size / 1024:.0f} KiB as JSON, with {len(state['alarms'])} alarms not at rest (SPC run rules on "
          "white noise, never acknowledged)")
    started = time.perf_counter()
    for i in range(20):
        engine.tick(1_900_000_000 * US + i * US, "emulsify", "FC-050")
    print(f"  tick() of the mixed engine: {(time.perf_counter() - started) / 20 * 1000:.2f} ms")
    print(f"worst {worst:.2f} us per reading per rule: {'OK' if worst < TARGET_US else 'ABOVE TARGET'}; "
          f"state() {state_ms:.1f} ms per commit: {'OK' if state_ms <= STATE_TARGET_MS else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
