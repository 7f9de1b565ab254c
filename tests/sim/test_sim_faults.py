"""Faults switched on while the model runs."""

from __future__ import annotations

import math
import statistics

import pytest
from sim_helpers import SHORT

from blackbox.sim.faults import (
    FAULT_NAMES,
    BadQuality,
    DoorOpen,
    Drift,
    FillWeightDrift,
    Frozen,
    HeatingOvershoot,
    LotNotOnRecipe,
    Spike,
    WeighingOutOfTolerance,
    make_fault,
    vacuum_leak,
)
from blackbox.sim.process import ProcessModel, Snapshot

LONG_EMULSIFY = {"emulsify": 1800.0}


def run_to(model: ProcessModel, phase: str) -> None:
    while model.phase != phase:
        model.step()
        assert model.step_no < 100_000


def run_phase(model: ProcessModel, phase: str) -> list[Snapshot]:
    snaps = []
    while model.phase == phase:
        snaps.append(model.snapshot)
        model.step()
    return snaps


def slope_per_min(snaps: list[Snapshot], tag: str) -> float:
    xs = [s.t / 60.0 for s in snaps]
    ys = [s.num(tag) for s in snaps]
    return statistics.linear_regression(xs, ys).slope


def test_heating_overshoot_makes_emulsify_climb_about_0_3_degc_per_minute() -> None:
    faulty = ProcessModel(seed=2, durations=LONG_EMULSIFY)
    normal = ProcessModel(seed=2, durations=LONG_EMULSIFY)
    run_to(faulty, "emulsify")
    run_to(normal, "emulsify")
    faulty.faults.add(HeatingOvershoot())
    hot, calm = run_phase(faulty, "emulsify"), run_phase(normal, "emulsify")
    settled = slice(300, None)  # after the controller has pulled the charge to its set point
    assert slope_per_min(hot[settled], "EM-01.temperature") == pytest.approx(0.3, abs=0.03)
    assert abs(slope_per_min(calm[settled], "EM-01.temperature")) < 0.03
    crossing = next(s for s in hot if s.num("EM-01.temperature") > 80.0)
    assert 10 * 60 < crossing.num("EM-01.phase_elapsed") < 25 * 60
    assert max(s.num("EM-01.temperature") for s in calm) < 80.0
    # the fault touches the emulsifier's heat only: other signals keep their exact values
    for h, c in zip(hot, calm, strict=True):
        assert (h["CR-01.temperature"], h["EM-01.vacuum"], h["OT-01.temperature"]) == (
            c["CR-01.temperature"], c["EM-01.vacuum"], c["OT-01.temperature"])


def test_a_frozen_value_holds_until_the_fault_is_removed() -> None:
    model = ProcessModel(seed=1, durations=SHORT)
    reference = ProcessModel(seed=1, durations=SHORT)
    run_to(model, "cool")
    fault_id = model.faults.add(Frozen(tag="EM-01.temperature"))
    frozen = [model.step()["EM-01.temperature"] for _ in range(20)]
    assert len(set(frozen)) == 1
    model.faults.remove(fault_id)
    model.step()
    reference.advance(model.t)
    assert model.snapshot["EM-01.temperature"] == reference.snapshot["EM-01.temperature"] != frozen[0]


def test_bad_quality_is_reported_per_tag() -> None:
    model = ProcessModel(seed=1)
    model.faults.add(BadQuality(tag="WT-01.temperature"))
    assert model.step().bad == {"WT-01.temperature"}
    model.faults.clear()
    assert model.step().bad == frozenset()


def test_a_fault_with_a_duration_ends_by_itself() -> None:
    model = ProcessModel(seed=1)
    reference = ProcessModel(seed=1)
    model.faults.add(Spike(tag="PW-01.toc", magnitude=1000.0, width=5.0, duration=10.0))
    spiked = [model.step().num("PW-01.toc") for _ in range(12)]
    plain = [reference.step().num("PW-01.toc") for _ in range(12)]
    assert [s - p for s, p in zip(spiked, plain, strict=True)][:5] == pytest.approx([1000.0] * 5)
    assert spiked[5:] == plain[5:]
    assert len(model.faults) == 0


def test_drift_and_vacuum_leak() -> None:
    model = ProcessModel(seed=1, durations=LONG_EMULSIFY)
    run_to(model, "emulsify")
    start = model.snapshot.num("EM-01.vacuum")
    model.faults.add(vacuum_leak())
    model.advance(15 * 60)
    assert start < -0.08
    assert model.snapshot.num("EM-01.vacuum") == pytest.approx(-0.05, abs=0.004)
    run_to(model, "qc")  # vacuum released: the leak's drift does not pull 0 MPa down to its limit
    assert model.advance(120).num("EM-01.vacuum") > -0.005
    model.faults.add(Drift(tag="CR-01.humidity", rate=0.1))
    before = model.snapshot.num("CR-01.humidity")
    model.advance(100)
    assert model.snapshot.num("CR-01.humidity") - before == pytest.approx(10.0, abs=2.0)


def test_a_fault_naming_a_phase_waits_for_it() -> None:
    model = ProcessModel(seed=1, durations=SHORT)
    fault = HeatingOvershoot(phase="emulsify")
    model.faults.add(fault)
    run_to(model, "oil_heat")
    assert fault.started is None
    run_to(model, "emulsify")
    assert fault.started == model.t


@pytest.mark.parametrize("name", sorted(FAULT_NAMES))
def test_faults_can_be_made_by_name(name: str) -> None:
    fault = make_fault(name, tag="EM-01.temperature", phase="cool", duration=60.0)
    assert (fault.phase, fault.duration) == ("cool", 60.0)
    model = ProcessModel(seed=1, durations=SHORT)
    model.faults.add(fault)
    run_to(model, "cool")
    assert fault.started == model.t


def test_make_fault_rejects_unknown_names_and_missing_tags() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        make_fault("gremlins")
    with pytest.raises(ValueError, match="needs a tag"):
        make_fault("frozen")


def test_fill_weight_drift_lowers_the_mean_by_0_05_g_per_100_jars() -> None:
    model = ProcessModel(seed=1, durations={"fill": 4000.0})
    run_to(model, "fill")
    model.faults.add(FillWeightDrift())
    snaps = run_phase(model, "fill")
    jars = int(snaps[-1].num("FL-01.jars_filled"))
    last = [s.num("FL-01.fill_weight") for s in snaps[-200:]]
    expected = 51.0 - 0.05 * (jars - 100) / 100.0
    assert statistics.mean(last) == pytest.approx(expected, abs=0.15)
    assert int(snaps[-1].num("FL-01.reject_count")) > 0.05 * jars


def test_door_left_open_collapses_the_clean_room_pressure() -> None:
    model = ProcessModel(seed=1)
    model.advance(60)
    assert model.snapshot.num("CR-01.differential_pressure") > 5.0
    model.faults.add(DoorOpen(duration=120.0))
    model.advance(60)
    assert model.snapshot["CR-01.door_open"] is True
    assert model.snapshot.num("CR-01.differential_pressure") < 2.0
    model.advance(180)
    assert model.snapshot["CR-01.door_open"] is False
    assert model.snapshot.num("CR-01.differential_pressure") > 5.0


def test_one_shot_weighing_faults_affect_the_next_weighing_only() -> None:
    model = ProcessModel(seed=1, durations=SHORT)
    model.faults.add(WeighingOutOfTolerance())
    model.faults.add(LotNotOnRecipe(lot="XX-0001"))
    records: list[Snapshot] = []
    while model.phase != "water_heat":
        prev = model.snapshot["WS-01.weigh_count"]
        snap = model.step()
        if snap["WS-01.weigh_count"] != prev:
            records.append(snap)
    first, rest = records[0], records[1:]
    deviation = abs(first.num("WS-01.actual") - first.num("WS-01.target"))
    assert deviation > first.num("WS-01.tolerance")
    assert first["WS-01.supplier_lot"] == "XX-0001"
    for r in rest:
        assert abs(r.num("WS-01.actual") - r.num("WS-01.target")) <= r.num("WS-01.tolerance")
        assert r["WS-01.supplier_lot"] != "XX-0001"
    assert len(model.faults) == 0


def test_tag_faults_leave_non_numeric_values_alone() -> None:
    model = ProcessModel(seed=1)
    model.faults.add(Drift(tag="EM-01.phase", rate=1.0))
    model.faults.add(Spike(tag="FL-01.jars_filled", magnitude=5.0))
    snap = model.step()
    assert snap["EM-01.phase"] == "idle" and snap["FL-01.jars_filled"] == 0
    assert not math.isnan(snap.num("EM-01.temperature"))
