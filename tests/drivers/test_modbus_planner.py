"""Data-driven planner tests: one folder per case under ``cases/`` with ``tags.yaml`` and ``expected.yaml``.

``tags.yaml``: ``settings`` (unit_id, max_gap, max_registers, max_bits), optional ``breaks``
(``[unit, table, address]`` triples), ``tags`` (Modbus tag fields; category and unit default) and
``generate`` (``{prefix, count, table, start, type}``: that many tags back to back).
``expected.yaml``: ``requests``, each with unit_id, table, start, count and either ``tags``
(name -> offset in the request) or ``tag_count``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml

from drivers.modbus.config import ModbusTagConfig, register_count
from drivers.modbus.planner import plan_reads, split_point, split_request

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


class Limits(TypedDict, total=False):
    max_registers: int
    max_bits: int
    max_gap: int


@pytest.mark.parametrize("settings", [{"max_registers": 126}, {"max_registers": 0}, {"max_bits": 2001},
                                      {"max_gap": -1}])
def test_planner_rejects_limits_beyond_the_protocol(settings: Limits) -> None:
    with pytest.raises(ValueError):
        plan_reads([_tag({"name": "a", "address": "hr:0", "type": "int16"})], **settings)


def test_a_refused_request_is_split_at_its_widest_gap_else_nearest_the_middle() -> None:
    def request(*tags: tuple[str, int, str]) -> Any:
        (only,) = plan_reads([_tag({"name": n, "address": f"hr:{a}", "type": t}) for n, a, t in tags], max_gap=20)
        return only

    gapped = request(("a", 0, "float32"), ("b", 2, "float32"), ("c", 12, "int16"), ("d", 14, "float32"))
    assert split_point(gapped) == 12  # the 8 unused registers hr:4-11 are the likeliest hole
    first, second = split_request(gapped, 12)
    assert (first.start, first.count, [s.tag.name for s in first.tags]) == (0, 4, ["a", "b"])
    assert (second.start, second.count, [(s.tag.name, s.offset) for s in second.tags]) == (12, 4, [("c", 0), ("d", 2)])

    contiguous = request(*((f"t{i}", 2 * i, "float32") for i in range(8)))
    assert split_point(contiguous) == 8  # no gap: the middle
    # a bit and its status word share a register: they are never parted; one value alone cannot be split
    assert split_point(request(("word", 0, "uint16"), ("bit", 0, "bool"))) is None
    assert split_point(request(("x", 5, "float64"))) is None
    with pytest.raises(ValueError, match="not a tag boundary"):
        split_request(contiguous, 3)
