"""Early warning on the simulator's drift scenarios: lead time before the limit, false warnings.

The simulated cream line (``blackbox.sim.ProcessModel``, stepped without servers) is replayed
through the rule engine with the demo line's tags and limits (``config/demo.yaml``) in two regimes:

* **plant**: a reading of every tag each simulated second, as an agent polling a real line at 1 s
  sees it, with the warning rules of :data:`PLANT_RULES` (times in simulated seconds) and the demo's
  threshold rules. These are the acceptance figures.
* **demo**: what ``blackbox demo`` sees — one reading per simulated minute, timestamps in wall time
  at 600x — with the rules of ``config/demo.yaml`` as they are (its warning rules are the plant
  rules at 600x). It shows that the demo line warns early too and stays quiet on normal batches.

Scenarios (../shared/REFERENCE-LINE.md): heating overshoot in emulsify (+0.3 degC/min from the start
of emulsify; the lead is measured to the H alarm at 80 degC), vacuum leak (-0.085 towards -0.05 MPa
over 15 min, starting 2 min into emulsify; to the H alarm at -0.06 MPa), fill-weight drift (mean
-0.05 g per 100 jars from the first jar; in jars, to the jar after which the true mean is below
50 g). Emulsify is lengthened in the first two so that the limits are crossed in emulsify. Each
scenario runs with several seeds; the lead reported against the target is the smallest.

False warnings: every warning (any non-threshold rule) raised over consecutive normal batches.

Usage: python benchmarks/early_warning.py [--normal-batches 20] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

from blackbox.config import Config, Rule, ThresholdRule, load_config
from blackbox.model import EventDraft, Quality, Sample
from blackbox.rules import RuleEngine
from blackbox.sim import FillWeightDrift, HeatingOvershoot, ProcessModel, vacuum_leak
from blackbox.sim.process import FILL_TARGET_G
from blackbox.sim.recipe import IDLE, PRODUCT

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
DEMO_SPEED = 600.0
"""Simulated seconds per wall second in ``blackbox demo``; demo.yaml's rule times are wall seconds."""
DEMO_POLL_S = 60.0
"""Simulated seconds between the demo's readings (a 0.1 s poll at 600x)."""
US = 1_000_000
WARNING_KINDS = {"trend", "spc", "ewma", "cusum"}
"""Rule families that give early warnings (the acceptance's "trend or SPC warning")."""

PLANT_RULES = [
    # config/demo.yaml's warning rules at 1x: times x 600, counts for one reading a second
    {"type": "trend", "tag": "EM-01.temperature", "window": 300, "min_samples": 120, "horizon": 600,
     "levels": ["h", "hh"], "priority": "high"},
    {"type": "trend", "tag": "EM-01.vacuum", "window": 240, "min_samples": 120, "horizon": 480, "levels": ["h"],
     "priority": "high"},
    # one point per jar (the demo sees one jar in 64): a smaller lambda, a longer memory; L and h for
    # about 10,000 points a batch (no false alarm in 400 simulated normal batches at these settings)
    {"type": "ewma", "tag": "FL-01.fill_weight", "phases": ["fill"], "sample_on": "FL-01.jars_filled",
     "centre": 51.0, "sigma": 0.3, "lam": 0.02, "L": 5.0, "sides": "low", "priority": "high"},
    {"type": "cusum", "tag": "FL-01.fill_weight", "phases": ["fill"], "sample_on": "FL-01.jars_filled",
     "centre": 51.0, "sigma": 0.3, "k": 0.5, "h": 16, "sides": "low", "priority": "high"},
    {"type": "trend", "tag": "PW-01.conductivity", "window": 3600, "min_samples": 1800, "horizon": 5400,
     "levels": ["h"]},
    {"type": "spc", "tag": "QC-01.ph", "sample_on": "QC-01.sample_id", "centre": 6.0, "sigma": 0.12,
     "checks": ["we1"], "priority": "high"},
    {"type": "spc", "tag": "QC-01.viscosity", "sample_on": "QC-01.sample_id", "centre": 11500, "sigma": 900,
     "checks": ["we1"], "priority": "high"},
    {"type": "batch", "tag": "EM-01.temperature", "measure": "peak", "phase": "emulsify", "batches": 10,
     "min_batches": 5, "k": 4, "min_deviation": 1.5},
    {"type": "rate_of_change", "tag": "EM-01.temperature", "phases": ["cool"], "max_fall": 1.5, "window": 900,
     "priority": "high"},
    {"type": "frozen", "tag": "EM-01.temperature", "phases": ["emulsify", "homogenize", "cool"], "samples": 60},
    {"type": "bad_quality", "tag": "EM-01.temperature", "samples": 2, "priority": "high"},
    {"type": "bad_quality", "tag": "EM-01.vacuum", "samples": 2},
    {"type": "stale", "tag": "EM-01.temperature", "intervals": 30},
]
TARGETS = {"heating overshoot": 5.0, "vacuum leak": 3.0, "fill-weight drift": 500.0}


@dataclass
class Regime:
    name: str
    rules: list[Rule]
    poll_s: float
    """Simulated seconds between readings."""
    wall_per_sim: float
    """Wall seconds per simulated second in the engine's timestamps."""


@dataclass
class Outcome:
    warning_at: float | None  # lead unit (minutes or jars) at the first warning
    limit_at: float | None
    warnings: Counter[str]
    thresholds: Counter[str]
    evaluations: int = 0

    @property
    def lead(self) -> float | None:
        if self.warning_at is None or self.limit_at is None:
            return None
        return self.limit_at - self.warning_at


def samples_of(model: ProcessModel, tags: list[str]) -> list[Sample]:
    snap = model.snapshot
    return [Sample(t, None, Quality.BAD) if t in snap.bad else Sample(t, snap.values[t]) for t in tags]


def run(model: ProcessModel, regime: Regime, tags: dict[str, object], watched: list[str],
        stop: Callable[[ProcessModel, list[EventDraft]], bool], unit: Callable[[ProcessModel], float],
        limit_event: Callable[[EventDraft], bool], warn_tag: str | None, until: float) -> Outcome:
    """Replay the model through the rules until ``stop`` says so or ``until`` simulated seconds passed."""
    engine = RuleEngine(regime.rules, tags)  # type: ignore[arg-type]
    out = Outcome(None, None, Counter(), Counter())
    batch: str | None = None
    phase: str | None = None
    every = max(1, round(regime.poll_s / model.dt))
    while model.t < until and not model.finished:
        model.step()
        if model.step_no % every:
            continue
        ts = round(model.t * regime.wall_per_sim * US)
        new_batch = model.batch_id or None
        new_phase = model.phase if new_batch and model.phase != IDLE else None
        product = PRODUCT if new_batch else None
        drafts: list[EventDraft] = []
        if new_batch != batch:
            if batch:
                drafts.append(EventDraft("batch.ended", batch, {"batch": batch, "last_phase": phase}, ts))
            if new_batch:
                drafts.append(EventDraft("batch.started", new_batch, {"batch": new_batch, "product": product}, ts))
        if new_batch and (new_phase != phase or new_batch != batch):
            drafts.append(EventDraft("batch.phase", new_batch, {
                "batch": new_batch, "phase": new_phase, "previous": phase if new_batch == batch else None}, ts))
        batch, phase = new_batch, new_phase
        events = engine.observe_events(drafts, ts, phase, product)
        events += engine.evaluate(samples_of(model, watched), ts, phase, product)
        out.evaluations += len(watched)
        if model.step_no % max(1, round(1.0 / regime.wall_per_sim / model.dt)) == 0:
            events += engine.tick(ts, phase, product)
        for ev in events:
            if ev.type != "alarm.raised" or ev.data.get("previous") is not None:
                continue
            kind = ev.data["kind"]
            (out.thresholds if kind == "threshold" else out.warnings)[ev.data["alarm"]] += 1
            if out.warning_at is None and kind in WARNING_KINDS and ev.subject == warn_tag:
                out.warning_at = unit(model)
            if out.limit_at is None and limit_event(ev):
                out.limit_at = unit(model)
        if stop(model, events):
            break
    return out


def minutes(model: ProcessModel) -> float:
    return model.t / 60.0


def jars(model: ProcessModel) -> float:
    return model.snapshot.num("FL-01.jars_filled")


def watched_tags(regime: Regime) -> list[str]:
    """The tags the rules read (a reading of the others would reach no rule)."""
    return sorted({t for r in regime.rules for t in (getattr(r, "tag", None), *r.condition_tags()) if t})


def scenario(name: str, seed: int, regime: Regime, cfg: Config) -> Outcome:
    tags = dict(cfg.tag_index())
    watched = watched_tags(regime)
    if name == "heating overshoot":
        model = ProcessModel(seed=seed, durations={"emulsify": 2400})
        model.faults.add(HeatingOvershoot(phase="emulsify"))
        return run(model, regime, tags, watched, lambda m, _: m.phase == "homogenize", minutes,
                   lambda ev: ev.subject == "EM-01.temperature" and ev.data["level"] == "H"
                   and ev.data["kind"] == "threshold", "EM-01.temperature", math.inf)
    if name == "vacuum leak":
        model = ProcessModel(seed=seed, durations={"emulsify": 1800})
        while not (model.phase == "emulsify" and model.phase_elapsed >= 120):
            model.step()
        model.faults.add(vacuum_leak())
        return run(model, regime, tags, watched, lambda m, _: m.phase == "homogenize", minutes,
                   lambda ev: ev.subject == "EM-01.vacuum" and ev.data["level"] == "H"
                   and ev.data["kind"] == "threshold", "EM-01.vacuum", math.inf)
    drift = FillWeightDrift(phase="fill")
    model = ProcessModel(seed=seed)
    model.faults.add(drift)
    # the true mean after n jars is target - n x rate / 100: below 50 g from this jar on
    below_50 = math.floor((FILL_TARGET_G - 50.0) / (drift.g_per_100_jars / 100.0) + 1e-9) + 1
    out = run(model, regime, tags, watched, lambda m, _: jars(m) >= below_50, jars, lambda ev: False,
              "FL-01.fill_weight", math.inf)
    out.limit_at = float(below_50)
    return out


def normal_batches(n: int, regime: Regime, cfg: Config) -> tuple[Outcome, float]:
    watched = watched_tags(regime)
    model = ProcessModel(seed=1, batches=n)
    started = time.perf_counter()
    out = run(model, regime, dict(cfg.tag_index()), watched, lambda m, _: False, minutes, lambda ev: False, None,
              math.inf)
    return out, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--normal-batches", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    cfg = load_config(DEMO_CONFIG).config
    thresholds = [r for r in cfg.rules if isinstance(r, ThresholdRule)]
    adapter: TypeAdapter[Rule] = TypeAdapter(Rule)
    regimes = [Regime("plant (1 reading/s)", [*thresholds, *(adapter.validate_python(r) for r in PLANT_RULES)],
                      1.0, 1.0),
               Regime("demo.yaml (1 reading/min, 600x)", list(cfg.rules), DEMO_POLL_S, 1.0 / DEMO_SPEED)]
    failed = False
    for regime in regimes:
        print(f"\n== {regime.name}: {len(regime.rules)} rules")
        for name, target in TARGETS.items():
            unit = "jars" if name == "fill-weight drift" else "min"
            leads = [scenario(name, seed, regime, cfg).lead for seed in range(1, args.seeds + 1)]
            known = [x for x in leads if x is not None]
            worst = min(known) if len(known) == len(leads) else None
            ok = worst is not None and worst >= target
            failed |= not ok and regime is regimes[0]
            shown = ", ".join("-" if x is None else f"{x:.0f}" if unit == "jars" else f"{x:.1f}" for x in leads)
            print(f"  {name:<18} lead {shown} {unit} (seeds 1-{args.seeds}); worst "
                  f"{'-' if worst is None else round(worst, 1)} {unit}, target >= {target:g}: "
                  f"{'OK' if ok else 'MISSED'}")
        out, elapsed = normal_batches(args.normal_batches, regime, cfg)
        failed |= bool(out.warnings) and regime is regimes[0]
        print(f"  {args.normal_batches} normal batches ({elapsed:.0f} s): {sum(out.warnings.values())} false warnings"
              f"{' ' + dict(out.warnings).__repr__() if out.warnings else ''}; threshold alarms "
              f"{sum(out.thresholds.values())}{' ' + repr(dict(out.thresholds)) if out.thresholds else ''}")
        if regime is regimes[0] and out.thresholds:
            per_batch = statistics.fmean([out.thresholds[k] / args.normal_batches for k in out.thresholds])
            print(f"  (threshold alarms on a normal line are not warnings; {per_batch:.1f} per batch and alarm)")
    if failed:
        raise SystemExit("a target was missed")


if __name__ == "__main__":
    main()
