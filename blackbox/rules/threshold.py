"""Threshold rule: HH/H/L/LL limits with deadband, on-delay and off-delay (SPEC §6).

A value alarms when it is strictly beyond a limit (a value exactly on the limit is in
specification). Once a level is active it holds until the value is back inside by the deadband,
so a signal chattering around the limit does not raise an alarm per crossing. Limits are looked up
per reading for the phase and product in force, so a cooling limit never judges emulsification.
"""

from __future__ import annotations

from dataclasses import dataclass

from blackbox.config import LimitSet, TagConfig, ThresholdRule
from blackbox.model import EventDraft

# most severe first; (level, attribute on LimitSet, +1 for a high limit / -1 for a low one)
LEVELS: tuple[tuple[str, str, int], ...] = (("HH", "hh", 1), ("LL", "ll", -1), ("H", "h", 1), ("L", "l", -1))
SEVERITY = {"HH": 2, "LL": 2, "H": 1, "L": 1}
SIDE = {"HH": 1, "H": 1, "LL": -1, "L": -1}


def classify(value: float, limits: LimitSet, active: str | None, deadband: float) -> tuple[str, float] | None:
    """The level ``value`` violates (with its limit), honouring the deadband of the active level."""
    for level, attr, side in LEVELS:
        limit = getattr(limits, attr)
        if limit is None:
            continue
        holding = active is not None and SIDE[active] == side and SEVERITY[active] >= SEVERITY[level]
        margin = deadband if holding else 0.0
        if (side > 0 and value > limit - margin) or (side < 0 and value < limit + margin):
            return level, limit
    return None


@dataclass
class _Pending:
    level: str | None
    since_us: int


class ThresholdMonitor:
    """State of one threshold rule on one tag."""

    def __init__(self, rule: ThresholdRule, tag: TagConfig) -> None:
        self.rule = rule
        self.tag = tag
        self.rule_id = f"threshold:{tag.name}"
        self.active: str | None = None
        self.active_limit: float | None = None
        self._pending: _Pending | None = None

    def evaluate(self, value: float, ts_us: int, phase: str | None, product: str | None) -> list[EventDraft]:
        limits = self.tag.limits_for(phase, product)
        found = classify(value, limits, self.active, self.rule.deadband) if limits else None
        wanted, limit = found if found else (None, None)
        if wanted == self.active:
            self._pending = None
            return []
        delay = self.rule.off_delay if wanted is None else self.rule.on_delay
        if delay > 0:
            if self._pending is None or self._pending.level != wanted:
                self._pending = _Pending(wanted, ts_us)
                return []
            if ts_us - self._pending.since_us < delay * 1_000_000:
                return []
        self._pending = None
        return [self._transition(wanted, limit, value, ts_us, in_force=limits is not None)]

    def _transition(self, wanted: str | None, limit: float | None, value: float, ts_us: int,
                    in_force: bool) -> EventDraft:
        previous, previous_limit = self.active, self.active_limit
        self.active, self.active_limit = wanted, limit
        data: dict[str, object] = {"rule": self.rule_id, "tag": self.tag.name, "value": value,
                                   "priority": self.rule.priority, "eng_unit": self.tag.eng_unit}
        if wanted is None:
            data.update(level=previous, limit=previous_limit)
            if not in_force:
                data["reason"] = "limits no longer in force"
            return EventDraft("alarm.cleared", self.tag.name, data, ts_us)
        data.update(level=wanted, limit=limit, previous=previous)
        return EventDraft("alarm.raised", self.tag.name, data, ts_us)
