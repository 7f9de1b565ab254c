"""Data-driven rule cases: each folder under cases/rules holds a signal, rules and the expected events.

case.yaml (see docs/rules.md, "Adding a case"):
    tag: {TagConfig fields}  or  tags: [...]        the tags (name and limits; the rest defaulted)
    rule: {...}  or  rules: [...]                   rule type defaults to threshold, tag to the only tag
    alarms: {AlarmsConfig fields}                   optional
    product: FC-050                                 optional
    tick: true                                      also run the engine's tick at every row's time
    expected: [{t: seconds, type: alarm.raised, level: H, <any event data key>: value}, ...]

signal.csv: t[,tag][,value][,quality][,reason][,phase][,batch][,event]
    t        seconds; rows with the same t are one poll cycle
    tag      the sample's tag (default: the only tag); empty: no sample in this row
    value    empty or "none" is a missing value; "nan" a non-finite one
    quality  good (default), uncertain, bad
    reason   the reason a bad reading carries
    phase    production phase in force (empty: none)
    batch    batch in force: a change produces batch.ended / batch.started, a phase change batch.phase
    event    source.disconnected:<source> or source.connected:<source>
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import TypeAdapter

from blackbox.columns import SampleColumns
from blackbox.config import AlarmsConfig, Rule, TagConfig
from blackbox.model import Context, EventDraft, Quality, Sample
from blackbox.rules import RuleEngine

CASES = sorted(p for p in (Path(__file__).parent / "cases" / "rules").iterdir() if p.is_dir())
RULE = TypeAdapter(Rule)
US = 1_000_000


def _tag(spec: dict[str, Any]) -> TagConfig:
    return TagConfig.model_validate({"address": "x", "type": "float", "category": "process", "unit": "U-1", **spec})


def load_case(case_dir: Path) -> tuple[dict[str, Any], RuleEngine, dict[str, TagConfig]]:
    spec = yaml.safe_load((case_dir / "case.yaml").read_text())
    tags = {t.name: t for t in map(_tag, spec["tags"] if "tags" in spec else [spec["tag"]])}
    only = next(iter(tags)) if len(tags) == 1 else None
    rules = [RULE.validate_python({"type": "threshold", **({"tag": only} if only else {}), **r})
             for r in (spec["rules"] if "rules" in spec else [spec["rule"]])]
    engine = RuleEngine(rules, tags, settings=AlarmsConfig.model_validate(spec.get("alarms", {})))
    return spec, engine, tags


class _Batches:
    """Turns the batch and phase columns into the tracker's batch.* events."""

    def __init__(self, product: str | None) -> None:
        self.product = product
        self.batch: str | None = None
        self.phase: str | None = None

    def events(self, batch: str | None, phase: str | None, ts: int) -> list[EventDraft]:
        out: list[EventDraft] = []
        if batch != self.batch:
            if self.batch:
                out.append(EventDraft("batch.ended", self.batch, {"batch": self.batch, "last_phase": self.phase}, ts,
                                      Context(batch=self.batch, product=self.product, phase=self.phase)))
            if batch:
                out.append(EventDraft("batch.started", batch, {"batch": batch, "product": self.product}, ts))
        if batch and (phase != self.phase or batch != self.batch):
            out.append(EventDraft("batch.phase", batch, {
                "batch": batch, "phase": phase, "previous": self.phase if batch == self.batch else None}, ts))
        self.batch, self.phase = batch, phase
        return out


def as_columns(samples: list[Sample], tag_tuples: dict[tuple[str, ...], tuple[str, ...]]) -> SampleColumns:
    """The cycle as a polling driver hands it: columns, the same tag tuple object for the same tags."""
    tags = tuple(s.tag for s in samples)
    cols = SampleColumns.of(samples)
    return SampleColumns(tag_tuples.setdefault(tags, tags), cols.values, cols.qualities, cols.reasons,
                         cols.source_ts_us)


def replay(case_dir: Path, columns: bool = False, after_cycle: Callable[[RuleEngine], None] | None = None,
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The case's events and the expected ones; ``after_cycle`` sees the engine after every cycle."""
    spec, engine, tags = load_case(case_dir)
    only = next(iter(tags)) if len(tags) == 1 else None
    product = spec.get("product")
    batches = _Batches(product)
    events: list[tuple[float, EventDraft]] = []
    tag_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
    with (case_dir / "signal.csv").open() as f:
        rows = list(csv.DictReader(f))
    for t_text, group in itertools.groupby(rows, key=lambda r: r["t"]):
        t = float(t_text)
        ts = round(t * US)
        cycle = list(group)
        phase = cycle[-1].get("phase") or None
        drafts: list[EventDraft] = []
        if "batch" in cycle[-1]:
            drafts += batches.events(cycle[-1]["batch"] or None, phase, ts)
        for row in cycle:
            if row.get("event"):
                kind, _, source = row["event"].partition(":")
                drafts.append(EventDraft(kind, source, {"source": source, "reason": "case"}, ts))
        out = engine.observe_events(drafts, ts, phase, product)
        samples = []
        for row in cycle:
            tag = row.get("tag", only)
            if not tag:
                continue
            raw = (row.get("value") or "").strip()
            value: float | None = None if raw in ("", "none") else float(raw)
            samples.append(Sample(tag, value, Quality(row.get("quality") or "good"), row.get("reason") or None))
        out += engine.evaluate(as_columns(samples, tag_tuples) if columns else samples, ts, phase, product)
        if spec.get("tick"):
            out += engine.tick(ts, phase, product)
        events += [(t, ev) for ev in out]
        if after_cycle is not None:
            after_cycle(engine)
    expected = [{**e, "t": float(e["t"]), "level": e.get("level")} for e in spec["expected"]]
    got = [{"t": t, "type": ev.type, **ev.data} for t, ev in events]
    # each event is compared on the keys its expectation names (t, type and level at least)
    keys = [list(e) for e in expected] + [["t", "type", "level"]] * max(0, len(got) - len(expected))
    return [{k: g.get(k) for k in ks} for g, ks in zip(got, keys, strict=False)], expected


@pytest.mark.parametrize("columns", [False, True], ids=["samples", "columns"])
@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_rule_case(case_dir: Path, columns: bool) -> None:
    got, expected = replay(case_dir, columns)
    assert got == expected


def test_every_rule_type_and_spc_check_has_a_case() -> None:
    types: set[str] = set()
    checks: set[str] = set()
    for case_dir in CASES:
        _spec, engine, _ = load_case(case_dir)
        for entry in engine.entries.values():
            types.add(entry.alarm.kind)
            checks.update(getattr(entry.rule, "checks", []))
    from blackbox.config import RULE_MODELS, SpcCheck

    assert types == {m.model_fields["type"].default for m in RULE_MODELS}
    assert checks == set(get_args(SpcCheck))
