"""Production context from PLC tags: batch, phase, lots consumed, QC results."""

from __future__ import annotations

from blackbox.agent.context import ContextTracker
from blackbox.config import ContextConfig, TagConfig
from blackbox.model import Quality, Sample, Value


def tag(name: str, type_: str = "float32", eng_unit: str = "", limits: list[dict[str, float]] | None = None,
        category: str = "context") -> TagConfig:
    return TagConfig.model_validate({"name": name, "address": "hr:0", "type": type_, "category": category,
                                     "unit": name.split(".")[0], "eng_unit": eng_unit, "limits": limits or []})


TAGS = {t.name: t for t in [
    tag("EM-01.batch_id", "string"), tag("EM-01.product", "string"), tag("EM-01.phase", "string"),
    tag("WS-01.count", "uint16"), tag("WS-01.material", "string"), tag("WS-01.lot", "string"),
    tag("WS-01.target", eng_unit="kg"), tag("WS-01.actual", eng_unit="kg"),
    tag("QC-01.sample", "string"), tag("QC-01.ph", limits=[{"l": 5.5, "h": 6.5}], category="quality"),
]}
CFG = ContextConfig.model_validate({
    "batch_tag": "EM-01.batch_id", "product_tag": "EM-01.product", "phase_tag": "EM-01.phase",
    "materials": [{"trigger": "WS-01.count", "material": "WS-01.material", "lot": "WS-01.lot",
                   "target": "WS-01.target", "actual": "WS-01.actual", "tolerance_pct": 0.5}],
    "qc": [{"trigger": "QC-01.sample", "sample": "QC-01.sample", "tests": {"pH": "QC-01.ph"}}],
})


def s(**values: Value) -> list[Sample]:
    names = {"batch": "EM-01.batch_id", "product": "EM-01.product", "phase": "EM-01.phase", "count": "WS-01.count",
             "material": "WS-01.material", "lot": "WS-01.lot", "target": "WS-01.target", "actual": "WS-01.actual",
             "sample": "QC-01.sample", "ph": "QC-01.ph"}
    return [Sample(names[k], v) for k, v in values.items()]


def test_batch_start_phases_and_end() -> None:
    t = ContextTracker(CFG, TAGS)
    assert t.observe(s(batch="", phase="idle")) == []
    evs = t.observe(s(batch="B1", product="FC-050", phase="dispense"))
    assert [e.type for e in evs] == ["batch.started", "batch.phase"]
    assert evs[0].data["product"] == "FC-050"
    assert t.context.batch == "B1" and t.context.phase == "dispense"
    assert [e.type for e in t.observe(s(phase="emulsify"))] == ["batch.phase"]
    assert t.observe(s(phase="emulsify")) == []
    ended = t.observe(s(batch="", phase="idle"))
    assert [e.type for e in ended] == ["batch.ended"]
    assert ended[0].context is not None and ended[0].context.batch == "B1"
    assert t.context.batch is None and t.context.phase is None


def test_a_batch_that_follows_another_in_the_same_phase_gets_its_phase_event() -> None:
    """The next batch is seen only once it is already in the phase the last one ended in (the agent was down
    meanwhile, or the PLC switched both tags at once): its phase is recorded for it all the same."""
    for restart in (False, True):
        t = ContextTracker(CFG, TAGS)
        t.observe(s(batch="B1", phase="fill"))
        if restart:
            t = ContextTracker(CFG, TAGS, t.state())
        evs = t.observe(s(batch="B2", phase="fill"))
        assert [(e.type, e.subject, e.data.get("phase")) for e in evs] == [
            ("batch.ended", "B1", None), ("batch.started", "B2", None), ("batch.phase", "B2", "fill")]
        assert evs[2].data["previous"] is None and t.context.phase == "fill"


def test_material_consumed_on_trigger_change_not_on_first_sight() -> None:
    t = ContextTracker(CFG, TAGS)
    assert t.observe(s(count=0, material="RM-001", lot="L1", target=361.5, actual=361.0)) == []
    evs = t.observe(s(count=1, material="RM-010", lot="GLY-77", target=25.0, actual=25.3))
    assert [e.type for e in evs] == ["material.consumed"]
    d = evs[0].data
    assert (d["material"], d["lot"], d["target"], d["actual"], d["eng_unit"]) == ("RM-010", "GLY-77", 25.0, 25.3, "kg")
    assert d["in_tolerance"] is False  # 1.2% off, tolerance 0.5%


def test_bad_quality_values_do_not_fire_triggers() -> None:
    t = ContextTracker(CFG, TAGS)
    t.observe(s(count=0))
    assert t.observe([Sample("WS-01.count", 1, Quality.BAD, "timeout")]) == []


def test_qc_result_judged_against_limits() -> None:
    t = ContextTracker(CFG, TAGS)
    t.observe(s(sample="", ph=6.0))
    evs = t.observe(s(sample="S-1", ph=6.8))
    assert [(e.type, e.data["test"], e.data["pass"], e.data["spec_high"]) for e in evs] == [
        ("qc.result", "pH", False, 6.5)]


def test_state_round_trip_prevents_repeated_events_after_restart() -> None:
    t = ContextTracker(CFG, TAGS)
    t.observe(s(batch="B1", phase="dispense", count=3))
    restarted = ContextTracker(CFG, TAGS, t.state())
    assert restarted.context == t.context
    assert restarted.observe(s(batch="B1", phase="dispense", count=3)) == []
    assert [e.type for e in restarted.observe(s(count=4))] == ["material.consumed"]


def test_a_batch_id_seen_again_after_it_ended_is_a_new_occurrence() -> None:
    """A PLC whose batch counter restarted runs ACC-0001 again: recorded as ACC-0001#2, with an event."""
    t = ContextTracker(CFG, TAGS)
    run: list[tuple[str, str | None, str | None]] = []
    for batch, phase in [("ACC-0001", "mix"), ("ACC-0001", "fill"), ("", "idle"), ("ACC-0001", "mix"),
                         ("ACC-0001", "fill"), ("ACC-0002", "mix"), ("", "idle")]:
        run += [(e.type, e.subject, e.data.get("occurrence")) for e in t.observe(s(batch=batch, phase=phase))]
        if batch == "ACC-0001" and phase == "fill" and t.context.batch != "ACC-0001":
            assert t.context.batch == "ACC-0001#2"  # what every reading of the second run carries
        saved = t.state()
        t = ContextTracker(CFG, TAGS, saved)  # and a restart anywhere changes nothing
    assert run == [
        ("batch.started", "ACC-0001", None), ("batch.phase", "ACC-0001", None), ("batch.phase", "ACC-0001", None),
        ("batch.ended", "ACC-0001", None),
        ("batch.id_reused", "ACC-0001#2", 2), ("batch.started", "ACC-0001#2", 2), ("batch.phase", "ACC-0001#2", None),
        ("batch.phase", "ACC-0001#2", None),
        ("batch.ended", "ACC-0001#2", None), ("batch.started", "ACC-0002", None), ("batch.phase", "ACC-0002", None),
        ("batch.ended", "ACC-0002", None),
    ]
    # a third run is the third occurrence; the operator's path counts the same way
    assert [e.subject for e in t.observe(s(batch="ACC-0001", phase="mix"))][:2] == ["ACC-0001#3", "ACC-0001#3"]
    manual = ContextTracker(ContextConfig(), TAGS)
    manual.start_batch("B-7", "FC-050", None, None, None, "ana")
    manual.end_batch("ana")
    evs = manual.start_batch("B-7", "FC-050", None, None, None, "ana")
    assert [(e.type, e.subject) for e in evs] == [("batch.id_reused", "B-7#2"), ("batch.started", "B-7#2")]
    assert evs[1].data["batch_id"] == "B-7" and manual.context.batch == "B-7#2"


def test_an_approved_material_tolerance_overrides_the_configured_one() -> None:
    from blackbox.spec.model import MaterialSpec

    t = ContextTracker(CFG, TAGS, material_specs={"RM-010": MaterialSpec(tolerance_pct=1.5),
                                                  "RM-020": MaterialSpec(tolerance=0.1)})
    t.observe(s(count=0, material="RM-001", lot="L1", target=100.0, actual=100.0))
    # 25.3 against 25.0 is 1.2 %: outside the configured 0.5 %, inside the specification's 1.5 %
    [rm010] = t.observe(s(count=1, material="RM-010", lot="GLY-77", target=25.0, actual=25.3))
    assert (rm010.data["tolerance_pct"], rm010.data["in_tolerance"]) == (1.5, True)
    [rm020] = t.observe(s(count=2, material="RM-020", lot="X", target=4.0, actual=4.2))  # 0.2 kg off, 0.1 allowed
    assert (rm020.data["tolerance"], rm020.data["tolerance_pct"], rm020.data["in_tolerance"]) == (0.1, 2.5, False)
    [rm001] = t.observe(s(count=3, material="RM-001", lot="L1", target=100.0, actual=100.6))  # not in the spec
    assert (rm001.data["tolerance_pct"], rm001.data["in_tolerance"]) == (0.5, False)
