"""Data-driven rule cases: each folder under cases/rules holds a signal, a rule and the expected events.

case.yaml:  tag: {TagConfig fields}   rule: {ThresholdRule fields}   product: FC-050
            expected: [{t: seconds, type: alarm.raised, level: H}, ...]
signal.csv: t,value[,quality][,phase]   (t in seconds; quality defaults to good)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from blackbox.config import TagConfig, ThresholdRule
from blackbox.model import Quality, Sample
from blackbox.rules import RuleEngine

CASES = sorted(p for p in (Path(__file__).parent / "cases" / "rules").iterdir() if p.is_dir())


def replay(case_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = yaml.safe_load((case_dir / "case.yaml").read_text())
    tag = TagConfig.model_validate({"address": "x", "type": "float", "category": "process", "unit": "U-1",
                                    **spec["tag"]})
    engine = RuleEngine([ThresholdRule.model_validate({"tag": tag.name, **spec["rule"]})], {tag.name: tag})
    got: list[dict[str, Any]] = []
    with (case_dir / "signal.csv").open() as f:
        for row in csv.DictReader(f):
            raw = row["value"].strip()
            value: float | None = float(raw) if raw not in ("", "none") else None
            sample = Sample(tag.name, value, Quality(row.get("quality") or "good"))
            t = float(row["t"])
            for ev in engine.evaluate([sample], int(t * 1_000_000), row.get("phase") or None, spec.get("product")):
                got.append({"t": t, "type": ev.type, "level": ev.data["level"]})
    return got, spec["expected"]


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_rule_case(case_dir: Path) -> None:
    got, expected = replay(case_dir)
    assert got == [{**e, "t": float(e["t"])} for e in expected]
