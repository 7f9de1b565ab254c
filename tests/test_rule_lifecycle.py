"""The alarm lifecycle (ISA-18.2): operator actions with who and when, shelving expiry, suppression,
out of service, floods, chattering, and rule state across a restart."""

from __future__ import annotations

import inspect
import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from blackbox.agent.alarm_commands import handlers as alarm_handlers
from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.buffer import Buffer, BufferError
from blackbox.config import AlarmsConfig, Rule, TagConfig
from blackbox.model import Context, EventDraft, Sample, now_us
from blackbox.rules import RuleEngine
from blackbox.rules.drift import EwmaMonitor

US = 1_000_000
RULE = TypeAdapter(Rule)
WANG = Caller(uid=1000, account="wang", claimed="wang.fang")


def tag(name: str, **limits: float) -> TagConfig:
    return TagConfig.model_validate({"name": name, "address": "x", "type": "float", "category": "process",
                                     "unit": "U", "limits": [limits] if limits else []})


def engine(rules: list[dict[str, Any]], tags: list[TagConfig], state: dict[str, Any] | None = None,
           **settings: Any) -> RuleEngine:
    return RuleEngine([RULE.validate_python({"type": "threshold", **r}) for r in rules], {t.name: t for t in tags},
                      state, AlarmsConfig(**settings))


def feed(e: RuleEngine, ts: int, **values: float | None) -> list[EventDraft]:
    return e.evaluate([Sample(k.replace("_", "-"), v) for k, v in values.items()], ts, None, None)


async def call(h: dict[str, Handler], cmd: str, args: dict[str, Any]) -> Any:
    """A control command as the socket runs it, for the caller WANG."""
    outcome = h[cmd](args, WANG)
    assert inspect.isawaitable(outcome)
    return await outcome


def kinds(events: list[EventDraft]) -> list[str]:
    return [ev.type for ev in events]


def state_of(e: RuleEngine, alarm_id: str) -> str:
    return e.entries[alarm_id].alarm.state.value


@pytest.fixture
def one() -> RuleEngine:
    return engine([{"tag": "T-1"}], [tag("T-1", h=80)])


async def test_acknowledge_records_who_and_when_and_is_refused_when_there_is_nothing_to_ack(one: RuleEngine) -> None:
    h = alarm_handlers(one)
    t0 = now_us()
    assert kinds(feed(one, t0, T_1=85)) == ["alarm.raised"]
    assert state_of(one, "threshold:T-1") == "active_unacknowledged"
    result = await call(h, "alarms.ack", {"alarms": ["threshold:T-1"]})
    assert result["done"][0]["state"] == "active_acknowledged"
    (event,) = one.tick(t0 + US, None, None)  # without a recorder the event waits for the next tick
    assert (event.type, event.data["user"], event.data["previous_state"], event.data["state"]) == (
        "alarm.acknowledged", "wang.fang (os:wang)", "active_unacknowledged", "active_acknowledged")
    assert t0 <= (event.ts_us or 0) <= now_us()
    with pytest.raises(ControlError, match="active_acknowledged: nothing to acknowledge"):
        await call(h, "alarms.ack", {"alarms": ["threshold:T-1"]})
    (cleared,) = feed(one, t0 + 2 * US, T_1=70)
    assert cleared.data["state"] == "normal"
    # cleared before anyone acknowledged: cleared_unacknowledged until acknowledged
    feed(one, t0 + 3 * US, T_1=85)
    feed(one, t0 + 4 * US, T_1=70)
    assert state_of(one, "threshold:T-1") == "cleared_unacknowledged"
    await call(h, "alarms.ack", {"alarms": ["T-1"]})  # by tag: all of the tag's alarms
    assert state_of(one, "threshold:T-1") == "normal"


async def test_ack_all_and_all_or_nothing() -> None:
    e = engine([{"tag": "A"}, {"tag": "B"}], [tag("A", h=1), tag("B", h=1)])
    h = alarm_handlers(e)
    feed(e, now_us(), A=2)
    with pytest.raises(ControlError, match="threshold:B is normal"):
        await call(h, "alarms.ack", {"alarms": ["threshold:A", "threshold:B"]})
    assert state_of(e, "threshold:A") == "active_unacknowledged"  # untouched: all or nothing
    with pytest.raises(ControlError, match="no alarm 'threshold:C'"):
        await call(h, "alarms.ack", {"alarms": ["threshold:C"]})
    with pytest.raises(ControlError, match="list of alarm ids"):
        await call(h, "alarms.ack", {"alarms": "threshold:A"})
    result = await call(h, "alarms.ack", {"all": True})
    assert [a["alarm"] for a in result["done"]] == ["threshold:A"]


async def test_shelving_hides_records_and_expires(one: RuleEngine) -> None:
    h = alarm_handlers(one)
    with pytest.raises(ControlError, match="reason is required"):
        await call(h, "alarms.shelve", {"alarms": ["threshold:T-1"], "duration_s": 60})
    with pytest.raises(ControlError, match=r"limited to 28800 s"):
        await call(h, "alarms.shelve", {"alarms": ["threshold:T-1"], "duration_s": 9 * 3600, "reason": "x"})
    before = now_us()
    await call(h, "alarms.shelve", {"alarms": ["threshold:T-1"], "duration_s": 60, "reason": "valve service"})
    t0 = now_us()
    (shelved,) = one.tick(t0, None, None)
    assert shelved.type == "alarm.shelved" and shelved.data["reason"] == "valve service"
    until = shelved.data["until_us"]
    assert before + 60 * US <= until <= t0 + 60 * US
    (raised,) = feed(one, t0 + US, T_1=85)  # recorded, not annunciated
    assert (raised.data["state"], raised.data["annunciated"]) == ("shelved", False)
    assert one.tick(until - 1, None, None) == []
    (expired,) = one.tick(until, None, None)
    assert (expired.type, expired.data["user"], expired.data["reason"], expired.data["state"]) == (
        "alarm.unshelved", None, "shelving expired", "active_unacknowledged")  # still active: annunciated again
    with pytest.raises(ControlError, match="not shelved"):
        await call(h, "alarms.unshelve", {"alarms": ["threshold:T-1"]})
    await call(h, "alarms.shelve", {"alarms": ["threshold:T-1"], "duration_s": 600, "reason": "r"})
    feed(one, now_us(), T_1=70)
    await call(h, "alarms.unshelve", {"alarms": ["threshold:T-1"]})
    assert state_of(one, "threshold:T-1") == "normal"  # cleared while shelved: nothing left to acknowledge


async def test_out_of_service_stops_judging_until_returned(one: RuleEngine) -> None:
    h = alarm_handlers(one)
    t0 = now_us()
    feed(one, t0, T_1=85)
    await call(h, "alarms.out_of_service", {"alarms": ["threshold:T-1"], "reason": "transmitter replaced"})
    assert state_of(one, "threshold:T-1") == "out_of_service"
    events = one.tick(t0 + US, None, None)
    assert [(e.type, e.data["level"], e.data["state"]) for e in events] == [
        ("alarm.out_of_service", "H", "out_of_service")]
    assert feed(one, t0 + 2 * US, T_1=99) == []  # not judged
    with pytest.raises(ControlError, match="out of service"):
        await call(h, "alarms.shelve", {"alarms": ["threshold:T-1"], "duration_s": 5, "reason": "r"})
    await call(h, "alarms.in_service", {"alarms": ["threshold:T-1"]})
    assert kinds(one.tick(t0 + 3 * US, None, None)) == ["alarm.in_service"]
    assert kinds(feed(one, t0 + 4 * US, T_1=99)) == ["alarm.raised"]  # judged afresh


async def test_suppression_by_a_tag_condition() -> None:
    e = engine([{"tag": "T-1", "suppress_when": {"tag": "CIP", "equals": True}}], [tag("T-1", h=80), tag("CIP")])
    t0 = now_us()
    e.evaluate([Sample("CIP", False), Sample("T-1", 85)], t0, None, None)
    events = e.evaluate([Sample("CIP", True), Sample("T-1", 85)], t0 + US, None, None)
    assert [(ev.type, ev.data["state"]) for ev in events] == [("alarm.suppressed", "suppressed")]
    events = e.evaluate([Sample("CIP", False)], t0 + 2 * US, None, None)
    assert [(ev.type, ev.data["state"]) for ev in events] == [("alarm.unsuppressed", "active_unacknowledged")]


async def test_an_action_answers_once_committed_and_is_undone_if_the_commit_fails(tmp_path: Path) -> None:
    e = engine([{"tag": "T-1"}], [tag("T-1", h=80)])
    buffer = Buffer(tmp_path / "b.sqlite")
    committed: list[Any] = []

    async def commit(samples: Any, events: Any) -> Any:
        rows = e.state_rows()
        c = buffer.commit(list(samples), list(events), Context(), None, {}, rows)
        e.state_saved(rows)
        committed.append(c)
        return c

    buffer.commit([], feed(e, now_us(), T_1=85), Context())
    h = alarm_handlers(e, commit)
    await call(h, "alarms.ack", {"alarms": ["threshold:T-1"]})
    (ack,) = committed[0].events
    assert (ack.type, ack.data["user"]) == ("alarm.acknowledged", "wang.fang (os:wang)")
    assert buffer.load_state()["rules"]["threshold:T-1"]["a"]["acked_by"] == "wang.fang (os:wang)"
    assert e.tick(now_us(), None, None) == []  # committed, not waiting
    buffer.close()

    async def failing(samples: Any, events: Any) -> Any:
        raise BufferError("disk full")

    feed(e, now_us(), T_1=70)
    feed(e, now_us(), T_1=85)
    h = alarm_handlers(e, failing)
    with pytest.raises(BufferError):
        await call(h, "alarms.ack", {"alarms": ["threshold:T-1"]})
    assert state_of(e, "threshold:T-1") == "active_unacknowledged"  # as if it never happened


def test_flood_starts_above_ten_alarms_in_ten_minutes_and_ends_below_five() -> None:
    names = [f"T-{i}" for i in range(12)]
    e = engine([{"tag": n} for n in names], [tag(n, h=1) for n in names])
    t0 = 1_000 * US
    flood: list[EventDraft] = []
    for i, n in enumerate(names):  # one alarm starting every 50 s: 11 within 10 min at the 11th
        flood += [ev for ev in e.evaluate([Sample(n, 2)], t0 + i * 50 * US, None, None) if ev.type == "alarm.flood"]
    (started,) = flood
    assert started.ts_us == t0 + 10 * 50 * US
    assert (started.data["state"], started.data["count"]) == ("started", 11)
    assert started.data["top"][0]["count"] == 1
    assert e.tick(t0 + 11 * 50 * US, None, None) == []  # 12 in the window: still a flood
    # starts at 0..550 s; fewer than 5 within 600 s once those up to 350 s have left it (at 950 s + 1 us)
    assert e.tick(t0 + 950 * US, None, None) == []
    (ended,) = e.tick(t0 + 950 * US + 1, None, None)
    assert (ended.data["state"], ended.data["alarms"]) == ("ended", 12)
    top = e.counts.top(t0 + 950 * US, 24, 3)
    assert len(top) == 3 and all(c == 1 for _, c in top)


def test_a_chattering_signal_raises_a_bounded_number_of_alarms() -> None:
    """Acceptance: around H 80 with a 1 % deadband (0.8), a signal swinging +/- 1.5 with noise for an
    hour raises at most chatter_count (3) alarms, instead of one per excursion through the deadband."""
    rng = random.Random(7)
    signal = [80 + 1.5 * math.sin(2 * math.pi * t / 20) + rng.gauss(0, 0.3) for t in range(3600)]
    raised = {}
    for chatter_count in (3, 10**6):  # 10**6: no chattering detection, the deadband alone
        e = engine([{"tag": "T-1", "deadband": 0.8}], [tag("T-1", h=80)], chatter_count=chatter_count)
        events = [ev for t, v in enumerate(signal) for ev in feed(e, t * US, T_1=v) + e.tick(t * US, None, None)]
        raised[chatter_count] = kinds(events).count("alarm.raised")
    assert raised[3] == 3
    assert raised[10**6] >= 150  # the deadband alone: one alarm per swing


def restarted(e: RuleEngine, rules: list[dict[str, Any]], tags: list[TagConfig], **settings: Any) -> RuleEngine:
    """A new engine from ``e``'s state as the buffer stores it (JSON)."""
    saved = orjson.loads(orjson.dumps(e.state()))
    again = engine(rules, tags, saved, **settings)
    assert again.state() == saved
    return again


def test_a_restart_neither_clears_nor_repeats_an_active_alarm() -> None:
    rules: list[dict[str, Any]] = [{"tag": "T-1"},
             {"type": "ewma", "tag": "W", "centre": 51, "sigma": 0.3, "lam": 0.2, "L": 3, "id": "ewma"},
             {"type": "cusum", "tag": "W", "centre": 51, "sigma": 0.3, "k": 0.5, "h": 4, "id": "cusum"},
             {"type": "spc", "tag": "W", "centre": 51, "sigma": 0.3, "checks": ["we4"], "id": "spc"},
             {"type": "frozen", "tag": "W", "samples": 5, "id": "frozen"},
             {"type": "trend", "tag": "T-1", "window": 10, "min_samples": 5, "horizon": 100, "levels": ["h"]}]
    tags = [tag("T-1", h=80), tag("W")]
    before = engine(rules, tags)
    raised = [ev.data["alarm"] for t in range(12)
              for ev in before.evaluate([Sample("W", 50.0), Sample("T-1", 70.0 + t)], t * US, None, None)
              if ev.type == "alarm.raised"]
    assert sorted(raised) == ["cusum", "ewma", "frozen", "spc", "threshold:T-1", "trend:T-1"]
    after = restarted(before, rules, tags)
    # the same readings: every condition still active, nothing raised or cleared again
    assert [ev for t in range(12, 20) for ev in after.evaluate([Sample("W", 50.0), Sample("T-1", 82.0 + t)],
                                                                t * US, None, None)] == []
    # back to normal: each clears once
    cleared = [ev.data["alarm"] for t in range(20, 40)
               for ev in after.evaluate([Sample("W", 51.0 + 0.5 * (t % 2)), Sample("T-1", 70.0)], t * US, None, None)]
    assert sorted(cleared) == sorted(raised)


# Alarm fields set after a raise at 0 s (H 80, value 85), and the keys its saved row must hold: each
# field that is set, and the flags that are not at their defaults.
ALARM_ROWS: list[tuple[str, dict[str, Any], set[str]]] = [
    ("active, unacknowledged", {}, {"level", "value", "limit", "since", "changed", "chatter", "acked"}),
    ("active, acknowledged", {"acked": True, "acked_by": "wang.fang"},
     {"level", "value", "limit", "since", "changed", "chatter", "acked_by"}),
    ("shelved with a reason", {"shelved_until_us": 600 * US, "shelved_by": "wang.fang", "note": "valve service"},
     {"level", "value", "limit", "since", "changed", "chatter", "acked", "shelved_until", "shelved_by", "note"}),
    ("suppressed", {"suppressed": True}, {"level", "value", "limit", "since", "changed", "chatter", "acked",
                                          "suppressed"}),
    ("out of service", {"out_of_service": True, "note": "transmitter replaced"},
     {"level", "value", "limit", "since", "changed", "chatter", "acked", "note", "oos"}),
    ("cleared, unacknowledged", {"level": None, "value": None, "limit": None},
     {"since", "changed", "chatter", "acked"}),
    ("normal, its starts still counted", {"level": None, "value": None, "limit": None, "acked": True},
     {"since", "changed", "chatter"}),
]


@pytest.mark.parametrize(("fields", "keys"), [c[1:] for c in ALARM_ROWS], ids=[c[0] for c in ALARM_ROWS])
def test_every_alarm_field_is_saved_and_taken_back(fields: dict[str, Any], keys: set[str]) -> None:
    rules: list[dict[str, Any]] = [{"tag": "T-1"}]
    tags = [tag("T-1", h=80)]
    before = engine(rules, tags)
    assert kinds(feed(before, 0, T_1=85)) == ["alarm.raised"]
    alarm = before.entries["threshold:T-1"].alarm
    for name, value in fields.items():
        setattr(alarm, name, value)
    assert set(before.state()["threshold:T-1"]["a"]) == keys
    after = restarted(before, rules, tags)
    assert after.entries["threshold:T-1"].alarm.describe() == alarm.describe()


def test_a_restart_keeps_learned_baselines_and_batch_history_and_starts_idle_statistics_afresh() -> None:
    rules: list[dict[str, Any]] = [
        {"type": "ewma", "tag": "W", "reference_samples": 4, "lam": 0.5, "L": 3, "id": "ewma"},
        {"type": "batch", "measure": "duration", "phase": "fill", "min_batches": 2, "id": "fill"}]
    tags = [tag("W")]
    before = engine(rules, tags)
    for t, v in enumerate([50.0, 50.5, 50.0, 50.5, 50.25]):  # learn: centre 50.25, sigma 0.5 / 1.128
        before.evaluate([Sample("W", v)], t * US, None, None)
    for b, (start, end) in enumerate([(0, 100), (200, 310)]):
        before.observe_events([EventDraft("batch.phase", f"B{b}", {"batch": f"B{b}", "phase": "fill"})],
                              start * US, "fill", "P")
        before.observe_events([EventDraft("batch.phase", f"B{b}", {"batch": f"B{b}", "phase": "qc",
                                                                   "previous": "fill"})], end * US, "qc", "P")
    after = restarted(before, rules, tags)
    monitor = after.entries["ewma"].monitor
    assert isinstance(monitor, EwmaMonitor)
    baseline = monitor.baseline
    assert baseline.centre == 50.25 and baseline.sigma == pytest.approx(0.5 / 1.128)
    assert after.state()["fill"]["m"]["s"]["history"] == {"P": [100.0, 110.0]}
    assert after.entries["ewma"].monitor.evidence() == {"z": None, "decay": 1.0}  # at rest: starts afresh


def test_a_removed_rule_clears_and_a_changed_rule_judges_its_active_alarm() -> None:
    e = engine([{"tag": "T-1"}, {"tag": "T-2"}], [tag("T-1", h=80), tag("T-2", h=80)])
    feed(e, 0, T_1=85, T_2=85)
    saved = orjson.loads(orjson.dumps(e.state()))
    changed = engine([{"tag": "T-1", "deadband": 1}], [tag("T-1", h=80), tag("T-2", h=80)], saved)
    (removed,) = changed.tick(US, None, None)
    assert (removed.type, removed.subject, removed.data["reason"]) == (
        "alarm.cleared", "threshold:T-2", "rule removed from the configuration")
    assert feed(changed, 2 * US, T_1=79.5) == []  # within the new deadband: still active, no second raise
    assert kinds(feed(changed, 3 * US, T_1=78)) == ["alarm.cleared"]


def test_bad_rule_sets_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="two rules raise the alarm 'threshold:T-1'"):
        engine([{"tag": "T-1"}, {"tag": "T-1"}], [tag("T-1", h=80)])
    with pytest.raises(ValueError, match="names tags that are not configured: NOPE"):
        engine([{"tag": "T-1", "when": {"tag": "NOPE", "equals": 1}}], [tag("T-1", h=80)])
