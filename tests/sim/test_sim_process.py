"""The process model alone: determinism, phase sequence, and realistic values per phase."""

from __future__ import annotations

import itertools
import re
import statistics

import pytest
from sim_helpers import SHORT, phases_of, run_batches

from blackbox.sim.process import ProcessModel, Snapshot
from blackbox.sim.recipe import IDLE, MATERIALS, PHASES
from blackbox.sim.tags import TAGS

BATCH_ID = re.compile(r"^FC050-\d{4}-\d{4}-\d{2}$")


def in_phase(snaps: list[Snapshot], phase: str) -> list[Snapshot]:
    return [s for s in snaps if s["EM-01.phase"] == phase]


def series(snaps: list[Snapshot], tag: str) -> list[float]:
    out = []
    for s in snaps:
        v = s[tag]
        assert isinstance(v, float), (tag, v)
        out.append(v)
    return out


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_the_same_values_at_the_same_simulated_times() -> None:
    a = run_batches(ProcessModel(seed=3, durations=SHORT, batches=2))
    b = run_batches(ProcessModel(seed=3, durations=SHORT, batches=2))
    assert len(a) == len(b) > 600
    for sa, sb in zip(a, b, strict=True):
        assert (sa.t, dict(sa.values)) == (sb.t, dict(sb.values))


def test_a_different_seed_gives_different_values() -> None:
    a = run_batches(ProcessModel(seed=3, durations=SHORT))
    b = run_batches(ProcessModel(seed=4, durations=SHORT))
    assert phases_of(a) == phases_of(b)  # same schedule...
    differing = [s.t for s, r in zip(a, b, strict=True) if s["EM-01.temperature"] != r["EM-01.temperature"]]
    assert len(differing) > 0.9 * len(a)  # ...different noise
    assert [s["WS-01.actual"] for s in a] != [s["WS-01.actual"] for s in b]


def test_values_do_not_depend_on_how_the_time_is_advanced() -> None:
    stepped = ProcessModel(seed=5, durations=SHORT)
    for _ in range(200):
        stepped.step()
    jumped = ProcessModel(seed=5, durations=SHORT)
    jumped.advance(200)
    assert dict(stepped.snapshot.values) == dict(jumped.snapshot.values)


# --- the batch ---------------------------------------------------------------------------------


def test_a_short_batch_runs_through_every_phase_in_order() -> None:
    model = ProcessModel(seed=1, durations=SHORT, batches=1)
    snaps = run_batches(model)
    assert phases_of(snaps) == [IDLE, *PHASES, IDLE]
    assert model.finished and model.batches_completed == 1
    for phase in PHASES:
        steps = in_phase(snaps, phase)
        assert len(steps) == SHORT[phase]
        assert [s["EM-01.phase_elapsed"] for s in steps] == [float(i) for i in range(len(steps))]
    batch = {s["EM-01.batch_id"] for s in snaps if s["EM-01.phase"] != IDLE}
    assert len(batch) == 1 and BATCH_ID.match(str(batch.pop()))
    for s in snaps:
        active = s["EM-01.phase"] != IDLE
        assert (s["EM-01.product_code"], s["EM-01.recipe"], s["EM-01.recipe_version"]) == (
            ("FC-050", "R-FC-050", "3") if active else ("", "", ""))
        assert bool(s["EM-01.batch_id"]) == active


def test_the_line_stays_idle_after_the_requested_batches() -> None:
    model = ProcessModel(seed=1, durations=SHORT, batches=1)
    run_batches(model)
    model.advance(2000)
    assert model.phase == IDLE and model.batches_started == 1


def test_consecutive_batches_get_consecutive_numbers_and_lots_that_span_batches() -> None:
    model = ProcessModel(seed=1, durations=SHORT, batches=3)
    snaps = run_batches(model)
    batches = list(dict.fromkeys(s.text("EM-01.batch_id") for s in snaps if s["EM-01.batch_id"]))
    assert batches == ["FC050-2026-1125-01", "FC050-2026-1125-02", "FC050-2026-1125-03"]
    lots: dict[tuple[str, str], set[str]] = {}
    for s in snaps:
        if s["WS-01.weigh_count"]:
            lots.setdefault((s.text("WS-01.material_code"), s.text("EM-01.batch_id")), set()).add(
                s.text("WS-01.supplier_lot"))
    assert snaps[-1]["WS-01.weigh_count"] == 3 * 12
    glycerin = [lots[("RM-010", b)] for b in batches]
    water = [lots[("RM-001", b)] for b in batches]
    assert glycerin[0] == glycerin[1] == glycerin[2]  # one supplier lot lasts three batches
    assert len(set().union(*water)) == 3  # purified water: one lot per batch


def test_durations_override_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        ProcessModel(durations={"mix": 10})
    with pytest.raises(ValueError, match="positive"):
        ProcessModel(durations={"cool": 0})


# --- realistic values at the default durations -------------------------------------------------


def test_every_tag_is_served_with_its_declared_type(default_batch: list[Snapshot]) -> None:
    python_type = {"Double": float, "float32": float, "String": str, "string": str, "uint16": int,
                   "uint32": int, "bool": bool}
    for s in default_batch[:: len(default_batch) // 50]:
        assert set(s.values) == {t.name for t in TAGS}
        for tag in TAGS:
            assert type(s[tag.name]) is python_type[tag.type], (tag.name, s[tag.name])


def test_dispense_weighs_every_material_within_tolerance_on_the_right_scale(default_batch: list[Snapshot]) -> None:
    records = []
    for prev, s in itertools.pairwise(default_batch):
        if s["WS-01.weigh_count"] != prev["WS-01.weigh_count"]:
            assert s.num("WS-01.weigh_count") == prev.num("WS-01.weigh_count") + 1
            assert s["EM-01.phase"] == "dispense"
            records.append(s)
    assert len(records) == 12  # ten materials, purified water in three portions
    assert {r["WS-01.material_code"] for r in records} == {m.code for m in MATERIALS}
    for r in records:
        target, actual, tol = (r.num(k) for k in ("WS-01.target", "WS-01.actual", "WS-01.tolerance"))
        assert abs(actual - target) <= tol + 1e-9
        assert r["WS-01.scale_id"] == ("SC-02" if target <= 2.5 else "SC-01")
        assert 0 < len(r.text("WS-01.supplier_lot")) <= 16
        assert r["WS-01.operator"]
    water = [r.num("WS-01.target") for r in records if r["WS-01.material_code"] == "RM-001"]
    assert sum(water) == pytest.approx(361.5)


def test_tank_temperatures_follow_the_heating_phases(default_batch: list[Snapshot]) -> None:
    water_heat = in_phase(default_batch, "water_heat")
    hot = [s for s in water_heat if s.num("WT-01.temperature") >= 85.0]
    assert len(hot) >= 20 * 60  # the >= 85 degC sanitising hold lasts 20 min
    assert all(s.t >= hot[0].t for s in water_heat[-len(hot):])
    oil_heat = in_phase(default_batch, "oil_heat")
    assert 72.0 <= min(series(oil_heat, "OT-01.temperature")) <= max(series(oil_heat, "OT-01.temperature")) <= 78.0
    assert min(series(oil_heat, "WT-01.temperature")) >= 80.0


def test_emulsify_and_homogenize_hold_their_limits_from_the_first_second(default_batch: list[Snapshot]) -> None:
    emulsify = in_phase(default_batch, "emulsify")
    assert 70.0 <= min(series(emulsify, "EM-01.temperature")) <= max(series(emulsify, "EM-01.temperature")) <= 80.0
    assert -0.09 <= min(series(emulsify, "EM-01.vacuum")) <= max(series(emulsify, "EM-01.vacuum")) <= -0.06
    assert statistics.mean(series(emulsify, "EM-01.vacuum")) == pytest.approx(-0.085, abs=0.003)
    speeds = series(emulsify, "EM-01.homogenizer_speed")
    assert 2500.0 <= min(speeds) <= max(speeds) <= 3500.0
    assert statistics.mean(speeds) == pytest.approx(3000.0, abs=30.0)
    homogenize = in_phase(default_batch, "homogenize")
    assert 65.0 <= min(series(homogenize, "EM-01.temperature")) <= max(series(homogenize, "EM-01.temperature")) <= 80
    speeds = series(homogenize, "EM-01.homogenizer_speed")
    assert 2800.0 <= min(speeds) <= max(speeds) <= 3200.0


def test_cooling_is_gentle_and_ends_below_40(default_batch: list[Snapshot]) -> None:
    cool = in_phase(default_batch, "cool")
    temps = series(cool, "EM-01.temperature")
    window = 300  # five-minute windows: the rate a controller is judged on
    rates = [(temps[i] - temps[i + window]) / (window / 60.0) for i in range(0, len(temps) - window, 30)]
    assert max(rates) <= 1.5
    assert min(rates) > 0.3  # it does cool
    assert temps[-1] <= 40.0
    assert 20.0 <= min(series(cool, "EM-01.scraper_speed")) <= max(series(cool, "EM-01.scraper_speed")) <= 40.0
    assert max(series(in_phase(default_batch, "add_actives"), "EM-01.temperature")) <= 40.0


def test_qc_publishes_one_sample_with_its_results(default_batch: list[Snapshot]) -> None:
    qc = in_phase(default_batch, "qc")
    batch = qc[0]["EM-01.batch_id"]
    changes = [(p, s) for p, s in itertools.pairwise(default_batch)
               if s["QC-01.sample_id"] != p["QC-01.sample_id"]]
    assert len(changes) == 1
    _, after = changes[0]
    assert after["EM-01.phase"] == "qc" and after["QC-01.sample_id"] == f"{batch}-Q1"
    final = default_batch[-1]
    for tag in ("QC-01.ph", "QC-01.viscosity", "QC-01.sample_temperature"):
        assert after[tag] == final[tag]  # results arrive together with the sample id, not later
    assert 5.5 <= after.num("QC-01.ph") <= 6.5
    assert 8000.0 <= after.num("QC-01.viscosity") <= 15000.0
    assert after.num("QC-01.sample_temperature") == pytest.approx(25.0, abs=1.0)


def test_filling_makes_about_51_g_jars_and_counts_them(default_batch: list[Snapshot]) -> None:
    fill = in_phase(default_batch, "fill")
    weights = series(fill, "FL-01.fill_weight")
    assert statistics.mean(weights) == pytest.approx(51.0, abs=0.1)
    assert 0.2 < statistics.stdev(weights) < 0.45
    assert min(weights) > 45.5
    jars = [int(s.num("FL-01.jars_filled")) for s in fill]
    assert jars == sorted(jars) and 9000 < jars[-1] < 10500  # ~500 kg of 51 g jars
    assert 0 < int(fill[-1].num("FL-01.reject_count")) < jars[-1] * 0.01
    assert all(s["FL-01.running"] for s in fill)
    assert not any(s["FL-01.running"] for s in default_batch if s["EM-01.phase"] != "fill")


def test_environment_stays_in_its_whole_batch_limits(default_batch: list[Snapshot]) -> None:
    def span(tag: str) -> tuple[float, float]:
        values = series(default_batch, tag)
        return min(values), max(values)

    assert 18.0 <= span("CR-01.temperature")[0] <= span("CR-01.temperature")[1] <= 26.0
    assert 45.0 <= span("CR-01.humidity")[0] <= span("CR-01.humidity")[1] <= 65.0
    assert span("CR-01.differential_pressure")[0] >= 5.0
    assert span("PW-01.conductivity")[1] < 1.0
    assert span("PW-01.toc")[1] < 500.0
    assert not any(s["CR-01.door_open"] for s in default_batch)
