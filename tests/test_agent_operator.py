"""Operator entries through the control handlers on a real buffer: recorded with who, attributed to
the batch and phase, refused (and nothing recorded) when they contradict the PLC or the record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import BufferThread, events_of, make_recorder, reply

from blackbox.agent.control import Caller, ControlError
from blackbox.agent.operator import operator_handlers
from blackbox.agent.recorder import Recorder
from blackbox.buffer import Buffer
from blackbox.config import ContextConfig
from blackbox.model import Sample

ZHANG = Caller(1001, "line1", "zhang.wei")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Recorder, dict[str, Any], Path]]:
    db = BufferThread()
    buffer = Buffer(tmp_path / "b.sqlite")
    rec = make_recorder(buffer, db)
    yield rec, operator_handlers(rec), tmp_path / "b.sqlite"
    buffer.close()
    db.close()


async def test_a_batch_by_hand_attributes_every_reading_to_its_batch_and_phase(
        setup: tuple[Recorder, dict[str, Any], Path]) -> None:
    rec, h, path = setup
    await rec.record([Sample("T", 1.0)])
    answer = await h["batch.start"]({"batch": "FC050-2026-1125-01", "product": "FC-050", "recipe": "R-FC-050",
                                     "recipe_version": "3", "phase": "dispense"}, ZHANG)
    assert answer["events"] == ["batch.started", "batch.phase"] and answer["phase"] == "dispense"
    await rec.record([Sample("T", 2.0)])
    await h["batch.phase"]({"phase": "emulsify"}, ZHANG)
    await rec.record([Sample("T", 3.0)])
    await h["batch.end"]({}, ZHANG)
    await rec.record([Sample("T", 4.0)])
    evs = [(e["type"], e["batch"], e["phase"], e["data"].get("operator")) for e in events_of(path)]
    assert evs == [
        ("batch.started", "FC050-2026-1125-01", "dispense", "zhang.wei (os:line1)"),
        ("batch.phase", "FC050-2026-1125-01", "dispense", "zhang.wei (os:line1)"),
        ("batch.phase", "FC050-2026-1125-01", "emulsify", "zhang.wei (os:line1)"),
        ("batch.ended", "FC050-2026-1125-01", "emulsify", "zhang.wei (os:line1)")]
    started = events_of(path, "batch.started")[0]["data"]
    assert (started["product"], started["recipe"], started["recipe_version"]) == ("FC-050", "R-FC-050", "3")
    readings = [(r.value, r.batch, r.phase) for r in rec._buffer.readings_between(1, 100)]
    assert readings == [(1.0, None, None), (2.0, "FC050-2026-1125-01", "dispense"),
                        (3.0, "FC050-2026-1125-01", "emulsify"), (4.0, None, None)]


async def test_material_and_qc_entries_are_judged_and_carry_who(setup: tuple[Recorder, dict[str, Any], Path]) -> None:
    _, h, path = setup
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "phase": "dispense"}, ZHANG)
    await h["material.add"]({"material": "RM-010", "lot": "GLY-77", "target": 25.0, "actual": 25.3, "scale": "SC-02",
                             "tolerance_pct": 0.5, "verifier": "li.na"}, ZHANG)
    await h["qc.add"]({"test": "pH", "value": 6.1, "spec_low": 5.5, "spec_high": 6.5, "sample": "S-1"}, ZHANG)
    await h["qc.add"]({"test": "TAMC", "value": "<10 cfu/g", "pass": True, "sample": "S-1"}, ZHANG)
    material = events_of(path, "material.consumed")[0]
    assert material["batch"] == "B1" and material["phase"] == "dispense"
    assert material["data"] == {"material": "RM-010", "lot": "GLY-77", "target": 25.0, "actual": 25.3,
                                "eng_unit": "kg", "scale": "SC-02", "tolerance": 0.125, "tolerance_pct": 0.5,
                                "in_tolerance": False, "operator": "zhang.wei (os:line1)", "verifier": "li.na",
                                "weighing": "W-1"}
    ph, tamc = events_of(path, "qc.result")
    assert (ph["data"]["pass"], ph["data"]["value"], ph["data"]["operator"]) == (True, 6.1, "zhang.wei (os:line1)")
    assert (tamc["data"]["pass"], tamc["data"]["value"], tamc["data"]["spec_low"]) == (True, "<10 cfu/g", None)


async def test_a_late_qc_result_names_its_batch(setup: tuple[Recorder, dict[str, Any], Path]) -> None:
    _, h, path = setup
    with pytest.raises(ControlError, match="no batch is active"):
        await h["qc.add"]({"test": "TAMC", "value": 12, "spec_high": 100, "sample": "M-7"}, ZHANG)
    await h["qc.add"]({"test": "TAMC", "value": 12, "spec_high": 100, "sample": "M-7", "batch": "B0"}, ZHANG)
    late = events_of(path, "qc.result")[0]
    assert (late["batch"], late["phase"], late["data"]["pass"]) == ("B0", None, True)


@pytest.mark.parametrize(("cmd", "args", "error"), [
    ("batch.phase", {"phase": "emulsify"}, "no batch is active"),
    ("batch.end", {}, "no batch is active"),
    ("batch.start", {"batch": "B1"}, "product is required"),
    ("batch.start", {"batch": "B\x071", "product": "P"}, "printable"),
    ("batch.start", {"batch": "idle", "product": "P"}, "idle_values"),
    ("batch.start", {"batch": "B1", "product": "P", "shift": "night"}, "unknown argument"),
    ("material.add", {"material": "RM-1", "lot": "L", "target": "25", "actual": 25, "scale": "S"},
     "target must be a finite number"),
    ("material.add", {"material": "RM-1", "lot": "L", "target": 0, "actual": 1, "scale": "S", "batch": "B"},
     "target must be positive"),
    ("material.add", {"material": "RM-1", "lot": "L", "target": 1, "actual": 1, "scale": "S", "batch": "B",
                      "tolerance": 0.1, "tolerance_pct": 1}, "not both"),
    ("qc.add", {"test": "pH", "value": 7.0, "sample": "S", "spec_low": 5.5, "spec_high": 6.5, "pass": True,
                "batch": "B"}, "contradicts"),
    ("qc.add", {"test": "pH", "value": 7.0, "sample": "S", "batch": "B"}, "give a specification"),
    ("qc.add", {"test": "pH", "value": "high", "sample": "S", "spec_high": 6.5, "batch": "B"}, "not a number"),
])
async def test_bad_entries_are_refused_with_the_reason_and_nothing_is_recorded(
        setup: tuple[Recorder, dict[str, Any], Path], cmd: str, args: dict[str, Any], error: str) -> None:
    rec, h, path = setup
    with pytest.raises(ControlError, match=error):
        await h[cmd](args, ZHANG)
    assert events_of(path) == [] and rec.tracker.context.batch is None


async def test_a_second_start_is_refused_while_a_batch_is_active(setup: tuple[Recorder, dict[str, Any], Path]) -> None:
    rec, h, path = setup
    await h["batch.start"]({"batch": "B1", "product": "P"}, ZHANG)
    with pytest.raises(ControlError, match="batch B1 is active"):
        await h["batch.start"]({"batch": "B2", "product": "P"}, ZHANG)
    await h["batch.phase"]({"phase": "mix"}, ZHANG)
    with pytest.raises(ControlError, match="already in phase mix"):
        await h["batch.phase"]({"phase": "mix"}, ZHANG)
    assert rec.tracker.context.batch == "B1" and len(events_of(path, "batch.started")) == 1


async def test_where_a_plc_tag_carries_the_batch_the_operator_may_not_contradict_it(tmp_path: Path) -> None:
    db = BufferThread()
    buffer = Buffer(tmp_path / "b.sqlite")
    rec = make_recorder(buffer, db, ContextConfig.model_validate({"batch_tag": "EM-01.batch_id"}))
    h = operator_handlers(rec)
    with pytest.raises(ControlError, match=r"PLC tag EM-01\.batch_id"):
        await reply(h["batch.start"], {"batch": "B1", "product": "P"}, ZHANG)
    await rec.record([Sample("EM-01.batch_id", "B9")])
    await reply(h["batch.phase"], {"phase": "mix"}, ZHANG)  # no phase tag: the phase is the operator's
    assert rec.tracker.context.phase == "mix"
    buffer.close()
    db.close()
