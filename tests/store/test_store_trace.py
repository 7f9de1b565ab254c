"""Trace report of a synthetic production batch, on SQLite files and on PostgreSQL."""

from __future__ import annotations

import json
from statistics import mean

import pytest
from sqlalchemy import Engine, delete, update
from store_synth import GATEWAY, SEC, SITE, T0, Gateway, Scenario, config_data, production_batch
from stored import set_num

from blackbox.store.ingest import Ingestor
from blackbox.store.report import ParameterStats, TraceReport
from blackbox.store.schema import events, tag_configs
from blackbox.store.trace import BatchNotFound, render_text, reverse_lot, trace_batch

BATCH = "FC050-2026-1125-01"


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


@pytest.fixture
def ingestor(engine: Engine, gw: Gateway) -> Ingestor:
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    return ing


@pytest.fixture
def scenario(gw: Gateway) -> Scenario:
    return production_batch(gw, BATCH)


def ingest_all(ing: Ingestor, gw: Gateway, skip: tuple[int, ...] = ()) -> None:
    for sealed in gw.sealed:
        if sealed.header.batch_seq in skip:
            continue
        result = ing.handle(sealed.wire, SITE, GATEWAY)
        assert result.status == "stored", result


def param(report: TraceReport, tag: str, phase: str) -> ParameterStats:
    [p] = [p for p in report.parameters if p.tag == tag and p.phase == phase]
    return p


def test_trace_of_a_complete_batch(engine: Engine, ingestor: Ingestor, scenario: Scenario) -> None:
    ingest_all(ingestor, scenario.gw)
    report = trace_batch(engine, BATCH)

    b = report.batch
    assert (b.product, b.recipe, b.recipe_version, b.operator) == ("FC-050", "R-FC-050", "3", "zhang.wei")
    assert (b.site_id, b.site_name, b.licence, b.line) == (SITE, "Shanghai Pudong Cosmetics Co.", "沪妆20160012", "L1")
    assert b.gateways == [f"{SITE}/{GATEWAY}"]
    assert b.started_at_us == T0 + 1 * SEC and b.ended_at_us == T0 + 60 * SEC

    assert [(p.phase, p.start_us, p.end_us) for p in report.phases] == [
        ("heat", T0 + 4 * SEC, T0 + 20 * SEC),
        ("emulsify", T0 + 20 * SEC, T0 + 40 * SEC),
        ("cool", T0 + 40 * SEC, T0 + 60 * SEC),
    ]
    assert report.phases[0].duration_s == 16.0

    m1, m2 = report.materials
    assert (m1.material, m1.lot, m1.target, m1.actual, m1.in_tolerance, m1.scale, m1.operator) == (
        "RM-001",
        "LOT-W-0001",
        361.5,
        361.2,
        True,
        "SC-01",
        "li.na",
    )
    assert m1.deviation_pct == pytest.approx((361.2 - 361.5) / 361.5 * 100)
    assert (m2.lot, m2.in_tolerance) == ("LOT-N-7", False)
    assert m2.deviation_pct == pytest.approx(0.5)

    # only process and environment tags; the material scale is not a process parameter
    assert {p.tag for p in report.parameters} == {"EM-01.temperature", "EM-01.vacuum", "CR-01.temperature"}

    heat = param(report, "EM-01.temperature", "heat")
    assert (heat.n, heat.min, heat.max, heat.mean) == (5, 60.0, 64.0, 62.0)
    assert [(lim.h, lim.phases) for lim in heat.limits] == [(90.0, [])]  # the everywhere limit
    assert heat.n_outside == 0

    emu = param(report, "EM-01.temperature", "emulsify")
    temps = scenario.temps_emulsify
    assert emu.n == len(temps) + 1 and emu.n_numeric == len(temps) and emu.n_bad_quality == 1
    assert (emu.min, emu.max) == (min(temps), max(temps))
    assert emu.mean == pytest.approx(mean(temps))
    # the product-specific emulsify limits (more specific than the phase-only set) are in force
    [lim] = emu.limits
    assert (lim.l, lim.h, lim.hh, lim.products) == (71.0, 79.0, 85.0, ["FC-050"])
    assert emu.n_outside == sum(1 for v in temps if v > 79.0 or v < 71.0) == 4
    assert emu.n_outside_hh_ll == 1
    [ex] = emu.excursions
    assert (ex.level, ex.peak, ex.n_readings, ex.returned) == ("HH", 86.0, 4, True)
    assert (ex.start_us, ex.end_us) == (T0 + 23 * SEC, T0 + 27 * SEC)  # from 79.5 until back at 78.0
    assert ex.duration_s == 4.0

    vac = param(report, "EM-01.vacuum", "emulsify")
    assert vac.n_outside == 1 and vac.excursions[0].level == "H"

    # a configuration change in the cool phase: each reading is judged by the limits of its time
    cool = param(report, "EM-01.temperature", "cool")
    assert [lim.h for lim in cool.limits] == [45.0, 40.0]
    assert cool.limits[1].effective_from_us == scenario.cool_config_at
    expected = sum(v > 45 for v in scenario.temps_cool_before) + sum(v > 40 for v in scenario.temps_cool_after)
    assert cool.n_outside == expected == 2
    assert cool.n == 5  # the reading after batch.ended is not part of the batch

    room = param(report, "CR-01.temperature", "emulsify")
    assert room.category == "environment" and room.n_outside == 1
    assert [e.returned for e in room.excursions] == [False]

    assert [(q.test, q.value, q.passed) for q in report.qc] == [("pH", 6.1, True), ("viscosity", 16500.0, False)]
    assert [(a.transition, a.user, a.ts_us) for a in report.alarms] == [
        ("raised", None, T0 + 23 * SEC),
        ("acknowledged", "wang.fang", T0 + 26 * SEC),
        ("cleared", None, T0 + 31 * SEC),
    ]
    assert [(s.type, s.source, s.reason) for s in report.sources] == [
        ("source.disconnected", "em01-opcua", "timeout"),
        ("source.connected", "em01-opcua", None),
    ]

    integ = report.integrity
    assert integ.verdict == "verified", integ.findings
    [rng] = integ.ranges
    assert (rng.first_batch_seq, rng.last_batch_seq, rng.n_present, rng.n_verified, rng.missing) == (1, 3, 3, 3, [])

    # JSON export round-trips, and the text report carries the figures
    assert TraceReport.model_validate_json(report.to_json()) == report
    assert json.loads(report.to_json())["integrity"]["verdict"] == "verified"
    text = render_text(report)
    for needle in (
        "Integrity: VERIFIED",
        "LOT-W-0001",
        "沪妆20160012",
        "EM-01.temperature",
        "wang.fang",
        "viscosity",
        "Excursions",
        "limits changed during the phase",
    ):
        assert needle in text, needle


def test_missing_sealed_batch_makes_the_verdict_incomplete(
    engine: Engine, ingestor: Ingestor, scenario: Scenario
) -> None:
    ingest_all(ingestor, scenario.gw, skip=(2,))
    report = trace_batch(engine, BATCH)
    assert report.integrity.verdict == "incomplete"
    assert "missing_batch" in {f.code for f in report.integrity.findings}
    assert report.integrity.ranges[0].missing == [2]
    assert "Integrity: INCOMPLETE" in render_text(report)
    # the gap is filled: now verified
    assert ingestor.handle(scenario.gw.sealed[1].wire, SITE, GATEWAY).status == "stored"
    assert trace_batch(engine, BATCH).integrity.verdict == "verified"


def test_missing_last_sealed_batch_is_noticed(engine: Engine, ingestor: Ingestor, scenario: Scenario) -> None:
    """Without the batch holding batch.ended, the end of the batch cannot be proven complete."""
    ingest_all(ingestor, scenario.gw, skip=(3,))
    integ = trace_batch(engine, BATCH).integrity
    assert integ.verdict == "incomplete"
    assert "no_end" in {f.code for f in integ.findings}


def test_edited_reading_makes_the_verdict_failed(engine: Engine, ingestor: Ingestor, scenario: Scenario) -> None:
    ingest_all(ingestor, scenario.gw)
    with engine.begin() as conn:
        assert set_num(86.0, 84.0)(conn) == 1
    integ = trace_batch(engine, BATCH).integrity
    assert integ.verdict == "failed"
    assert "row_altered" in {f.code for f in integ.findings}
    assert trace_batch(engine, BATCH, deep=False).integrity.verdict == "verified"


def test_deleted_event_makes_the_verdict_failed(engine: Engine, ingestor: Ingestor, scenario: Scenario) -> None:
    ingest_all(ingestor, scenario.gw)
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.type == "alarm.acknowledged"))
    report = trace_batch(engine, BATCH)
    assert report.integrity.verdict == "failed"
    assert all(a.transition != "acknowledged" for a in report.alarms)


def test_buffer_gap_makes_the_verdict_incomplete(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    production_batch(gw, BATCH, gap=True)
    ingest_all(ingestor, gw)
    integ = trace_batch(engine, BATCH).integrity
    assert integ.verdict == "incomplete"
    assert "buffer_gap" in {f.code for f in integ.findings}
    assert [(g.type, g.data["reason"]) for g in integ.gaps] == [("buffer.gap", "disk quota")]


def test_reverse_lot_and_unknown_batch(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    production_batch(gw, BATCH)
    production_batch(gw, "FC050-2026-1125-02", t=T0 + 3600 * SEC)
    ingest_all(ingestor, gw)
    uses = reverse_lot(engine, "LOT-N-7")
    assert [(u.batch, u.product, u.material, u.actual) for u in uses] == [
        (BATCH, "FC-050", "RM-040", 20.1),
        ("FC050-2026-1125-02", "FC-050", "RM-040", 20.1),
    ]
    assert reverse_lot(engine, "LOT-NONE") == []
    assert reverse_lot(engine, "LOT-N-7", site="OTHER") == []
    with pytest.raises(BatchNotFound):
        trace_batch(engine, "NO-SUCH-BATCH")
    with pytest.raises(BatchNotFound):
        trace_batch(engine, BATCH, site="OTHER-SITE")
    # the second batch has its own verdict over its own range of sealed batches
    second = trace_batch(engine, "FC050-2026-1125-02")
    assert second.integrity.verdict == "verified"
    assert (second.integrity.ranges[0].first_batch_seq, second.integrity.ranges[0].last_batch_seq) == (4, 6)


def test_limit_sets_a_newer_config_model_refuses_are_still_shown(engine: Engine, ingestor: Ingestor,
                                                                  gw: Gateway) -> None:
    """The trace reads limit sets as recorded: one out of order (refused by today's model) is still the limit
    in force; one that cannot be read at all, or holds no limit, is reported as a finding, never dropped."""
    tag = {"name": "EM-01.temperature", "unit": "EM-01", "category": "process", "eng_unit": "degC", "limits": [
        {"phases": ["heat"], "products": [], "ll": None, "l": 95.0, "h": 90.0, "hh": None},  # l above h
        {"phases": "heat", "h": 1.0},  # phases not a list: unreadable
        {"phases": ["heat"], "products": ["FC-050"]},  # no limit at all
    ]}
    gw.apply_config(T0, config_data([tag]))
    gw.start_batch(BATCH, T0 + SEC)
    gw.set_phase("heat", T0 + 2 * SEC)
    for i in range(3):
        gw.reading("EM-01.temperature", 60.0 + i, T0 + (3 + i) * SEC)
    gw.end_batch(T0 + 10 * SEC)
    gw.seal()
    ingest_all(ingestor, gw)

    report = trace_batch(engine, BATCH)
    [lim] = param(report, "EM-01.temperature", "heat").limits
    assert (lim.ll, lim.l, lim.h, lim.hh, lim.phases, lim.products) == (None, 95.0, 90.0, None, ["heat"], [])
    unreadable = [f for f in report.integrity.findings if f.code == "limits_unreadable"]
    assert [f.message.split(": ", 1)[1] for f in unreadable] == [
        "limit set 2 of tag EM-01.temperature: phases must be a list of names, not 'heat': the limits in force "
        "may be unknown",
        "limit set 3 of tag EM-01.temperature: it holds none of ll, l, h, hh: the limits in force may be unknown",
    ]
    assert report.integrity.verdict == "incomplete"


@pytest.mark.parametrize(("data", "why"), [
    ({"tags": [{"unit": "EM-01"}]}, "tag entry 1 has no name"),
    ({"tags": [{"name": 7}]}, "tag entry 1 has no name"),
    ({"tags": {"EM-01.temperature": {}}}, "its tags are a dict, not a list"),
    (["not", "an", "object"], "the configuration is a list, not an object"),
])
def test_a_configuration_row_the_report_cannot_read_is_a_finding(engine: Engine, ingestor: Ingestor, gw: Gateway,
                                                                   data: object, why: str) -> None:
    """A tag_configs row edited into a shape the record format never yields: the report says what it could
    not read (and the integrity check names the edit), it does not silently report no limits."""
    production_batch(gw, BATCH, t=T0)
    ingest_all(ingestor, gw)
    with engine.begin() as conn:
        assert conn.execute(update(tag_configs).values(data=data)).rowcount >= 1
    report = trace_batch(engine, BATCH)
    unreadable = {f.message.split(": ", 1)[1] for f in report.integrity.findings if f.code == "limits_unreadable"}
    assert unreadable == {f"{why}: the limits in force may be unknown"}
    assert report.integrity.verdict == "failed"
