"""Data-driven planner tests: one folder per case under ``cases/`` with ``tags.yaml`` and ``expected.yaml``.

``tags.yaml``: ``settings`` (unit_id, max_gap, max_registers, max_bits), optional ``breaks``
(``[unit, table, address]`` triples), ``tags`` (Modbus tag fields; category and unit default) and
``generate`` (``{prefix, count, table, start, type}``: that many tags back to back).
``expected.yaml``: ``requests``, each with unit_id, table, start, count and either ``tags``
(name -> offset in the request) or ``tag_count``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.modbus.config import ModbusTagConfig, register_count
from drivers.modbus.planner import plan_reads

CASES = Path(__file__).parent / "cases"


def _tag(raw: dict[str, Any]) -> ModbusTagConfig:
    return ModbusTagConfig.model_validate({"category": "process", "unit": "TEST", **raw})


def _load_tags(spec: dict[str, Any]) -> list[ModbusTagConfig]:
    tags = [_tag(t) for t in spec.get("tags", [])]
    for gen in spec.get("generate", []):
        size = register_count(gen["type"])
        for i in range(gen["count"]):
            tags.append(_tag({"name": f"{gen['prefix']}{i:05d}", "type": gen["type"],
                              "address": f"{gen['table']}:{gen['start'] + i * size}"}))
    return tags


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_planner_case(case: str) -> None:
    spec = yaml.safe_load((CASES / case / "tags.yaml").read_text())
    expected = yaml.safe_load((CASES / case / "expected.yaml").read_text())["requests"]
    tags = _load_tags(spec)
    breaks = [(u, t, a) for u, t, a in spec.get("breaks", [])]
    plan = plan_reads(tags, breaks=breaks, **spec.get("settings", {}))

    got = []
    for request, want in zip(plan, expected, strict=False):
        row: dict[str, Any] = {"unit_id": request.unit_id, "table": request.table,
                               "start": request.start, "count": request.count}
        if "tags" in want:
            row["tags"] = {slot.tag.name: slot.offset for slot in request.tags}
        else:
            row["tag_count"] = len(request.tags)
        got.append(row)
    assert len(plan) == len(expected), f"{len(plan)} requests planned, {len(expected)} expected"
    assert got == expected

    # invariants every plan keeps, whatever the case
    seen = [slot.tag.name for request in plan for slot in request.tags]
    assert sorted(seen) == sorted(t.name for t in tags), "every tag is read exactly once"
    for request in plan:
        limit = 2000 if request.table in ("co", "di") else spec.get("settings", {}).get("max_registers", 125)
        assert 1 <= request.count <= limit
        for slot in request.tags:
            assert slot.tag.register == request.start + slot.offset
            assert slot.offset + slot.size <= request.count, "a value is never split across requests"


def test_planner_is_deterministic_whatever_the_tag_order() -> None:
    spec = yaml.safe_load((CASES / "mixed_tables_and_units" / "tags.yaml").read_text())
    tags = _load_tags(spec)
    assert plan_reads(tags, **spec["settings"]) == plan_reads(list(reversed(tags)), **spec["settings"])


@pytest.mark.parametrize("settings", [{"max_registers": 126}, {"max_registers": 0}, {"max_bits": 2001},
                                      {"max_gap": -1}])
def test_planner_rejects_limits_beyond_the_protocol(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        plan_reads([_tag({"name": "a", "address": "hr:0", "type": "int16"})], **settings)
