"""The rule engine inside the real recorder and buffer: source and batch events reach the rules, an
acknowledgement is in the buffer before it is answered, and the rule state is saved with the commit."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import pytest
from pydantic import TypeAdapter

from blackbox.agent.alarm_commands import handlers as alarm_handlers
from blackbox.agent.clock import GatewayClock
from blackbox.agent.context import ContextTracker
from blackbox.agent.control import Caller
from blackbox.agent.recorder import Recorder
from blackbox.agent.system_alarms import SystemAlarms
from blackbox.buffer import Buffer
from blackbox.config import ContextConfig, Rule, TagConfig
from blackbox.model import Event, EventDraft, Sample
from blackbox.rules import RuleEngine

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
TAG = TagConfig.model_validate({"name": "EM-01.temperature", "address": "x", "type": "float",
                                "category": "process", "unit": "EM-01", "limits": [{"h": 80}]})


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Recorder, Buffer]]:
    buffer = Buffer(tmp_path / "buffer.sqlite")

    async def db(fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return fn(*args)

    rules = RuleEngine([TypeAdapter(Rule).validate_python(r) for r in (
        {"type": "disconnected", "source": "line-opcua"},
        {"type": "threshold", "tag": "EM-01.temperature", "priority": "high"},
        {"type": "batch", "measure": "duration", "phase": "emulsify", "min_batches": 2})], {TAG.name: TAG})
    yield Recorder(buffer, db, ContextTracker(ContextConfig(), {TAG.name: TAG}), rules, GatewayClock(),
                   SystemAlarms()), buffer
    buffer.close()


async def test_source_events_reach_the_rules_and_acks_are_committed_before_answering(
        setup: tuple[Recorder, Buffer]) -> None:
    recorder, buffer = setup
    committed = await recorder.record([], [EventDraft("source.disconnected", "line-opcua",
                                                      {"source": "line-opcua", "reason": "timeout"})])
    assert committed is not None
    assert [(e.type, e.data.get("alarm")) for e in committed.events] == [
        ("source.disconnected", None), ("alarm.raised", "disconnected:line-opcua")]

    committed = await recorder.record([Sample("EM-01.temperature", 85.0)])
    assert committed is not None
    (raised,) = committed.events
    assert (raised.type, raised.data["state"]) == ("alarm.raised", "active_unacknowledged")

    seen: list[Event] = []
    recorder.subscribe(lambda c: seen.extend(c.events))
    handlers = alarm_handlers(recorder.rules, recorder.commit)
    outcome = handlers["alarms.ack"]({"alarms": ["EM-01.temperature"]}, Caller(0, "root", "wang.fang"))
    assert inspect.isawaitable(outcome)
    await outcome  # answered only now: the event is already committed
    (ack,) = seen
    assert ack.seq > raised.seq
    assert (ack.type, ack.data["user"]) == ("alarm.acknowledged", "wang.fang (os:root)")
    saved = buffer.load_state()["rules"]
    assert saved["threshold:EM-01.temperature"]["a"]["acked_by"] == "wang.fang (os:root)"


async def test_batch_events_from_operator_commits_reach_the_rules(setup: tuple[Recorder, Buffer]) -> None:
    recorder, _ = setup
    for batch, (start, end) in (("B1", (0, 600)), ("B2", (1000, 1600)), ("B3", (2000, 2900))):
        for phase in ("emulsify", "cool"):
            await recorder.commit([], [EventDraft("batch.phase", batch, {
                "batch": batch, "phase": phase, "previous": "emulsify" if phase == "cool" else None},
                (start if phase == "emulsify" else end) * 1_000_000)])
    monitor = recorder.rules.entries["batch:emulsify.duration"].monitor
    state = monitor.state()
    assert state is not None and state["history"][""] == [600.0, 600.0, 900.0]
