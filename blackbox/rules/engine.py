"""The rule engine: routes readings, events and time to the rules, and their verdicts to the alarms.

Each configured rule becomes a *monitor* (its family's evaluation state, see the family modules)
and an :class:`~blackbox.rules.lifecycle.Alarm` (the ISA-18.2 lifecycle every family shares). The
engine decides when a rule is in force — its phases, products and ``when`` condition — and when its
alarm is suppressed by design, and collects the events for the recorder to commit with the cycle.

Operator actions (acknowledge, shelve…) arrive on the control socket (:mod:`blackbox.agent.alarm_commands`)
and are committed by the recorder before they are answered; without a recorder (tests, benchmarks)
their events wait in an outbox that the next ``evaluate``/``tick`` hands over.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from blackbox.columns import TagPicker
from blackbox.config import (
    AlarmsConfig,
    BadQualityRule,
    BatchRule,
    ControlRule,
    CusumRule,
    DisconnectedRule,
    EwmaRule,
    FrozenRule,
    RateOfChangeRule,
    Rule,
    RuleBase,
    SpcRule,
    StaleRule,
    TagCondition,
    TagConfig,
    ThresholdRule,
    TrendRule,
)
from blackbox.model import EventDraft, Quality, Sample, StateRows, Value
from blackbox.rules.base import Monitor, Verdict
from blackbox.rules.batch import BatchMonitor
from blackbox.rules.drift import CusumMonitor, EwmaMonitor
from blackbox.rules.flood import Flood, StartCounts
from blackbox.rules.health import (
    BadQualityMonitor,
    DisconnectedMonitor,
    FrozenMonitor,
    RateOfChangeMonitor,
    StaleMonitor,
)
from blackbox.rules.lifecycle import Alarm, AlarmError
from blackbox.rules.spc import SpcMonitor
from blackbox.rules.threshold import ThresholdMonitor
from blackbox.rules.trend import TrendMonitor
from blackbox.seal.limits import applies as scope_applies

log = logging.getLogger(__name__)

STATE_VERSION = 2
ENGINE_ROW = ""
"""Key of the saved row of what no single rule owns (the flood indicator); an alarm id is never empty."""
_MISSING = object()


def build_monitor(rule: RuleBase, tags: dict[str, TagConfig]) -> Monitor:
    """The monitor of one rule, by family."""
    match rule:
        case ThresholdRule():
            return ThresholdMonitor(rule, tags[rule.tag])
        case TrendRule():
            return TrendMonitor(rule, tags[rule.tag])
        case RateOfChangeRule():
            return RateOfChangeMonitor(rule)
        case FrozenRule():
            return FrozenMonitor(rule)
        case StaleRule():
            return StaleMonitor(rule)
        case BadQualityRule():
            return BadQualityMonitor(rule)
        case DisconnectedRule():
            return DisconnectedMonitor(rule)
        case SpcRule():
            return SpcMonitor(rule)
        case EwmaRule():
            return EwmaMonitor(rule)
        case CusumRule():
            return CusumMonitor(rule)
        case BatchRule():
            return BatchMonitor(rule)
    raise TypeError(f"no monitor for rule type {type(rule).__name__}")


def holds(condition: TagCondition, value: Value) -> bool:
    """Whether a tag condition holds for the tag's latest good value (unknown: it does not)."""
    if value is None:
        return False
    if condition.equals is not None and value != condition.equals:
        return False
    if condition.above is not None or condition.below is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if condition.above is not None and not value > condition.above:
            return False
        if condition.below is not None and not value < condition.below:
            return False
    return True


@dataclass(slots=True, eq=False)
class Entry:
    """One configured rule: its monitor, its alarm, and whether it is in force right now."""

    rule: RuleBase
    monitor: Monitor
    alarm: Alarm
    fingerprint: str
    tag: str | None
    """The tag the rule judges (``None`` for a source or a phase duration)."""
    in_force: bool = False


class RuleEngine:
    """Evaluates every configured rule on the samples of one poll cycle, on events and on time."""

    def __init__(self, rules: Iterable[Rule | RuleBase], tags: dict[str, TagConfig],
                 state: dict[str, Any] | None = None, settings: AlarmsConfig | None = None) -> None:
        self.settings = settings or AlarmsConfig()
        self.entries: dict[str, Entry] = {}
        self.others: list[Alarm] = []
        """Alarms of no configured rule (the recorder's own, see :meth:`attach`): listed and acted on alike."""
        for rule in rules:
            alarm_id = rule.alarm_id()
            if alarm_id in self.entries:
                raise ValueError(f"two rules raise the alarm {alarm_id!r}: give one of them another id")
            tag_name: str | None = getattr(rule, "tag", None)
            missing = [t for t in (tag_name, *rule.condition_tags()) if t and t not in tags]
            if missing:
                raise ValueError(f"rule {alarm_id!r} names tags that are not configured: {', '.join(missing)}")
            eng_unit = tags[tag_name].eng_unit if tag_name else ""
            fingerprint = hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:16]
            self.entries[alarm_id] = Entry(rule, build_monitor(rule, tags), Alarm(rule, self.settings, eng_unit),
                                           fingerprint, tag_name)
        self._by_tag: dict[str, list[Entry]] = {}
        self._by_trigger: dict[str, list[Entry]] = {}
        self._by_condition: dict[str, list[Entry]] = {}
        self._listeners: list[Entry] = []  # rules that follow events of the record
        self._tickers: list[Entry] = []  # rules that act on time
        for e in self.entries.values():
            rule = e.rule
            sample_on = rule.sample_on if isinstance(rule, ControlRule) else None
            if sample_on:
                self._by_trigger.setdefault(sample_on, []).append(e)
            elif e.tag:
                self._by_tag.setdefault(e.tag, []).append(e)
            for c in (rule.when, rule.suppress_when):
                if c is not None:
                    self._by_condition.setdefault(c.tag, []).append(e)
            if isinstance(rule, DisconnectedRule | BatchRule):
                self._listeners.append(e)
            if isinstance(rule, StaleRule | DisconnectedRule):
                self._tickers.append(e)
        self._watched = set(self._by_trigger) | set(self._by_condition) | {
            e.tag for es in self._by_trigger.values() for e in es if e.tag}
        self._pick_watched = TagPicker(self._watched)
        self._pick_ruled = TagPicker(self._by_tag)
        self._latest: dict[str, Value] = {}
        self._scope: tuple[str | None, str | None] | None = None
        self._now_us = 0
        """The latest time the engine was given (evaluate, tick)."""
        self._outbox: list[EventDraft] = []
        self.flood = Flood(self.settings)
        self.counts = StartCounts()
        self._foreign_counts: dict[str, Any] = {}
        """Saved start counts of alarms no rule of this engine raises (kept, never counted further)."""
        self._saved: dict[str, str] | None = None
        """The rows as last committed (``None``: not yet, the next commit writes them all)."""
        self._dirty: set[Entry] = set()
        """Rules something happened to since the rows were taken (see :meth:`state_rows`)."""
        self._engine_dirty = False
        if state:
            self._restore(state)
        self._changing = {e for e in self.entries.values() if e.monitor.changing()}
        """Rules whose state readings may change without a verdict: re-read at every commit."""

    # -- what the recorder calls -------------------------------------------------------------

    def evaluate(self, samples: Iterable[Sample], ts_us: int, phase: str | None,
                 product: str | None) -> list[EventDraft]:
        """Judge one cycle's samples; return the alarm events they cause (and any waiting ones)."""
        self._now_us = ts_us
        out = self._take_outbox()
        samples = samples if isinstance(samples, Sequence) else list(samples)
        fired: list[Entry] = []
        changed: set[str] = set()
        cycle = self._watch(self._pick_watched(samples), changed, fired) if self._watched else {}
        out += self._enter_scope(ts_us, phase, product, changed)
        by_tag = self._by_tag
        for s in self._pick_ruled(samples):
            for e in by_tag[s.tag]:
                if e.in_force:
                    verdict = e.monitor.observe(s, ts_us, phase, product)
                    if verdict is not None:
                        out += self._apply(e, verdict, ts_us)
        for e in fired:  # sampled rules: one point per change of their trigger tag
            if e.in_force and e.tag:
                sample = cycle.get(e.tag) or Sample(e.tag, self._latest.get(e.tag))
                verdict = e.monitor.observe(sample, ts_us, phase, product)
                if verdict is not None:
                    out += self._apply(e, verdict, ts_us)
        return out

    def observe_events(self, drafts: Iterable[EventDraft], ts_us: int, phase: str | None,
                       product: str | None) -> list[EventDraft]:
        """Follow the record's source and batch events (disconnections, phases of a batch)."""
        out = self._enter_scope(ts_us, phase, product, set())
        if not self._listeners:
            return out
        for draft in drafts:
            if not draft.type.startswith(("source.", "batch.")):
                continue
            for e in self._listeners:
                if e.in_force:
                    self._dirty.add(e)  # an event may change what the rule keeps (a batch's history)
                    verdict = e.monitor.event(draft, ts_us, phase, product)
                    if verdict is not None:
                        out += self._apply(e, verdict, ts_us)
        return out

    def tick(self, ts_us: int, phase: str | None, product: str | None) -> list[EventDraft]:
        """Time-driven evaluation without a reading: stale tags, delays, shelving expiry, floods."""
        self._now_us = ts_us
        out = self._take_outbox()
        out += self._enter_scope(ts_us, phase, product, set())
        for e in self._tickers:
            if e.in_force:
                verdict = e.monitor.tick(ts_us)
                if verdict is not None:
                    out += self._apply(e, verdict, ts_us)
        for e in self.entries.values():
            alarm = e.alarm
            if alarm.shelved_until_us is not None or alarm.chatter.held_since_us is not None:
                self._dirty.add(e)
                out += alarm.tick(ts_us)
        out += self.flood.tick(ts_us)
        self._engine_dirty = True  # the flood indicator forgets starts older than its window
        return out

    # -- scope: which rules are in force, which alarms suppressed ----------------------------

    def _watch(self, samples: Sequence[Sample], changed: set[str], fired: list[Entry]) -> dict[str, Sample]:
        """First pass over a cycle's watched samples: condition and trigger tags, and what sampled rules need."""
        cycle: dict[str, Sample] = {}
        latest = self._latest
        for s in samples:
            cycle[s.tag] = s
            if s.quality is not Quality.GOOD or s.value is None:
                continue
            old = latest.get(s.tag, _MISSING)
            if old == s.value:
                continue
            latest[s.tag] = s.value
            if s.tag in self._by_condition:
                changed.add(s.tag)
            if old is not _MISSING and s.tag in self._by_trigger:  # a first sighting is only a baseline
                fired.extend(self._by_trigger[s.tag])
        return cycle

    def _in_force(self, e: Entry, phase: str | None, product: str | None) -> bool:
        r = e.rule
        return (not e.alarm.out_of_service and scope_applies(r, phase, product)
                and (r.when is None or holds(r.when, self._latest.get(r.when.tag))))

    def _enter_scope(self, ts_us: int, phase: str | None, product: str | None, changed: set[str]) -> list[EventDraft]:
        if (phase, product) != self._scope:
            self._scope = (phase, product)
            return self._rescope(self.entries.values(), ts_us, phase, product)
        if changed:
            affected = {e for tag in changed for e in self._by_condition[tag]}
            return self._rescope(affected, ts_us, phase, product)
        return []

    def _rescope(self, entries: Iterable[Entry], ts_us: int, phase: str | None,
                 product: str | None) -> list[EventDraft]:
        out: list[EventDraft] = []
        dirty = self._dirty
        for e in entries:
            in_force = self._in_force(e, phase, product)
            if in_force:
                verdict = e.monitor.rescope(phase, product)
                if verdict is not None:
                    out += self._apply(e, verdict, ts_us)
            else:
                if e.in_force:
                    e.monitor.reset()
                if e.alarm.level is not None:
                    out += e.alarm.drop_condition(ts_us, "rule no longer in force")
            if in_force != e.in_force:
                dirty.add(e)
            e.in_force = in_force
            r = e.rule
            if r.suppress_in or r.suppress_when is not None:
                suppressed = phase in r.suppress_in or (
                    r.suppress_when is not None and holds(r.suppress_when, self._latest.get(r.suppress_when.tag)))
                event = e.alarm.set_suppressed(suppressed, ts_us)
                if event is not None:
                    dirty.add(e)
                    out.append(event)
        return out

    def _apply(self, e: Entry, verdict: Verdict, ts_us: int) -> list[EventDraft]:
        self._dirty.add(e)
        events, started = e.alarm.condition(verdict, ts_us)
        if started:
            self._engine_dirty = True
            self.counts.add(e.alarm.id, ts_us)
            events += self.flood.started(e.alarm.id, ts_us)
        return events

    def _take_outbox(self) -> list[EventDraft]:
        out, self._outbox = self._outbox, []
        return out

    # -- operator actions (see blackbox.agent.alarm_commands) --------------------------------------

    def select(self, selectors: Sequence[str]) -> list[Alarm]:
        """Alarms by id, or every alarm of a tag or source; an unknown name is an error."""
        found: list[Alarm] = []
        for sel in selectors:
            if sel in self.entries:
                matches = [self.entries[sel].alarm]
            else:
                matches = [a for a in self.alarms() if a.id == sel or a.subject == sel]
            if not matches:
                raise AlarmError(f"no alarm {sel!r}: give an alarm id (see `blackbox alarms --all`) or a tag")
            found += [a for a in matches if a not in found]
        return found

    def act(self, action: str, alarms: Sequence[Alarm], **args: Any) -> list[EventDraft]:
        """Apply an operator action (an :class:`Alarm` method) to every alarm, or to none if one refuses."""
        for a in alarms:
            a.check(action)
        events = [getattr(a, action)(**args) for a in alarms]
        self._refresh_force(alarms)
        return events

    def take_back(self, saved: Sequence[tuple[Alarm, dict[str, Any] | None]], events: Sequence[EventDraft]) -> None:
        """Undo an action whose events could not be recorded: the alarms return to ``saved``."""
        for a, state in saved:
            a.restore(state)
        self._refresh_force([a for a, _ in saved])
        log.warning("operator action not recorded, undone: %s", ", ".join(e.type for e in events))

    def post(self, events: Sequence[EventDraft]) -> None:
        """Events for the next ``evaluate``/``tick`` to hand over (when no recorder commits them now)."""
        self._outbox += events

    def _refresh_force(self, alarms: Iterable[Alarm]) -> None:
        for a in alarms:
            e = self.entries.get(a.id)
            if e is None or e.alarm is not a:  # not a rule's: nothing to evaluate
                continue
            self._dirty.add(e)  # an operator acted on it
            in_force = self._in_force(e, *self._scope) if self._scope is not None else False
            if e.in_force and not in_force:
                e.monitor.reset()
            e.in_force = in_force

    # -- reporting ----------------------------------------------------------------------------

    def active_alarms(self) -> list[tuple[str, str]]:
        """(tag or subject, level) of every alarm whose condition is active."""
        return [(e.alarm.subject, e.alarm.level) for e in self.entries.values() if e.alarm.level is not None]

    def alarms(self) -> list[Alarm]:
        return [*(e.alarm for e in self.entries.values()), *self.others]

    def attach(self, alarms: Sequence[Alarm]) -> None:
        """List ``alarms`` (which no rule of this engine raises) with the rules' ones, for operator actions."""
        clash = [a.id for a in alarms if a.id in self.entries]
        if clash:
            raise ValueError(f"a rule may not use the alarm id of the agent's own alarm {clash[0]!r}")
        self.others = list(alarms)

    # -- persistence --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Rule state to keep across restarts, as rows: alarm id -> the rule's row, plus :data:`ENGINE_ROW`.

        A rule's row holds what is not at rest: its alarm (``a``) unless at rest, its monitor
        (``m``: learned baselines, batch histories, pending disconnections, and the statistic
        behind an active condition), and its alarm start counts (``c``). Not kept: the statistics
        of rules at rest (windows, run counters, EWMA, CUSUM), which start afresh after a restart.
        Rules with nothing to keep (most of them) have no row.
        """
        rows = {alarm_id: row for alarm_id, e in self.entries.items() if (row := self._row(e)) is not None}
        rows[ENGINE_ROW] = self._engine_row()
        return rows

    def state_rows(self) -> StateRows:
        """The rows to write with the next commit: those of the rules whose state changed since the last.

        Saved with every buffer commit, in its transaction, so the rows read back after a crash
        are those of the last committed cycle. Only the rules something happened to since (see
        the ``_dirty`` marks) and those whose readings change their state (:meth:`Monitor.changing`)
        are serialised; a row equal to the one saved is not written again. Call
        :meth:`state_saved` once the commit succeeded, :meth:`state_unsaved` if it failed.
        """
        taken, self._dirty = self._dirty, set()
        engine_dirty, self._engine_dirty = self._engine_dirty, False
        saved = self._saved
        if saved is None:
            self._changing = {e for e in self.entries.values() if e.monitor.changing()}
            return StateRows({k: _text(r) for k, r in self.state().items()}, replace=True,
                             taken=frozenset(self.entries.values()))
        rows: dict[str, str | None] = {}
        changing = self._changing
        for e in taken | changing:
            row = self._row(e)
            text = None if row is None else _text(row)
            alarm_id = e.alarm.id
            if text != saved.get(alarm_id):
                rows[alarm_id] = text
            if e.monitor.changing():
                changing.add(e)
            else:
                changing.discard(e)
        if engine_dirty:
            text = _text(self._engine_row())
            if text != saved.get(ENGINE_ROW):
                rows[ENGINE_ROW] = text
        return StateRows(rows, taken=frozenset((*taken, *((self,) if engine_dirty else ()))))

    def state_saved(self, rows: StateRows) -> None:
        """``rows`` (from :meth:`state_rows`) are committed."""
        saved = {} if rows.replace or self._saved is None else self._saved
        for key, text in rows.rows.items():
            if text is None:
                saved.pop(key, None)
            else:
                saved[key] = text
        self._saved = saved

    def state_unsaved(self, rows: StateRows) -> None:
        """``rows`` could not be committed: what they were taken from is marked again."""
        for e in rows.taken:
            if e is self:
                self._engine_dirty = True
            else:
                self._dirty.add(e)

    def _row(self, e: Entry) -> dict[str, Any] | None:
        row: dict[str, Any] = {}
        a = e.alarm.state_dict(self._now_us)
        if a is not None:
            row["a"] = a
        monitor = e.monitor
        m = monitor.state()
        level = monitor.level
        if m is not None or level is not None:
            row["m"] = {"fp": e.fingerprint, "level": level, "s": m,
                        "e": monitor.evidence() if level is not None else None}
        counts = self.counts.of(e.alarm.id)
        if counts is not None:
            row["c"] = counts
        return row or None

    def _engine_row(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "flood": self.flood.state(), "counts": self._foreign_counts}

    def _restore(self, state: dict[str, Any]) -> None:
        engine = state.get(ENGINE_ROW)
        if engine is None or engine.get("v") != STATE_VERSION:
            log.warning("rule state of another version (%r) is not restored: rules start afresh",
                        None if engine is None else engine.get("v"))
            return
        for alarm_id, row in state.items():
            if alarm_id == ENGINE_ROW:
                continue
            e = self.entries.get(alarm_id)
            if "c" in row:
                if e is None:
                    self._foreign_counts[alarm_id] = row["c"]
                self.counts.restore({alarm_id: row["c"]})
            saved_monitor = row.get("m")
            if e is not None and saved_monitor is not None and saved_monitor["fp"] == e.fingerprint:
                # a removed or changed rule's history does not apply
                e.monitor.level = saved_monitor["level"]
                if saved_monitor["s"] is not None:
                    e.monitor.restore(saved_monitor["s"])
                if saved_monitor["e"] is not None:
                    e.monitor.restore_evidence(saved_monitor["e"])
            saved = row.get("a")
            if saved is None:
                continue
            if e is None:
                if saved.get("level") is not None or not saved.get("acked", True):
                    self._outbox.append(EventDraft("alarm.cleared", alarm_id, {
                        "alarm": alarm_id, "rule": alarm_id, "level": saved.get("level"), "state": "normal",
                        "user": None, "reason": "rule removed from the configuration"}))
                continue
            e.alarm.restore(saved)
            if e.monitor.level is None and e.alarm.level is not None and e.alarm.chatter.held_since_us is None:
                e.monitor.level = e.alarm.level  # a rule changed while in alarm: it must judge the clear
        self.flood.restore(engine["flood"])
        self._foreign_counts.update(engine["counts"])
        self.counts.restore(engine["counts"])


def _text(row: dict[str, Any]) -> str:
    return orjson.dumps(row).decode()
