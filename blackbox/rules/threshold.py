"""Threshold rule: HH/H/L/LL limits with deadband, on-delay and off-delay (SPEC §6).

A value alarms when it is strictly beyond a limit (a value exactly on the limit is in
specification). Once a level is active it holds until the value is back inside by the deadband,
so a signal chattering around the limit does not raise an alarm per crossing. Limits are looked up
for the phase and product in force, so a cooling limit never judges emulsification; when the
phase changes to one without limits, an active alarm clears ("limits no longer in force").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blackbox.config import LimitSet, TagConfig, ThresholdRule
from blackbox.model import Sample
from blackbox.rules.base import US, Monitor, Verdict, numeric

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


@dataclass(slots=True)
class _Pending:
    level: str | None
    since_us: int


class ThresholdMonitor(Monitor):
    """State of one threshold rule on one tag."""

    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule, tag: TagConfig) -> None:
        super().__init__(rule)
        self.tag = tag
        self._pending: _Pending | None = None
        self._scope: tuple[str | None, str | None] | None = None
        self._limits: LimitSet | None = None
        self._normal = (math.inf, -math.inf)  # (low, high): inside both, and no alarm, nothing to do

    def limits(self, phase: str | None, product: str | None) -> LimitSet | None:
        """The limit set in force (cached: the scope changes rarely, readings arrive constantly)."""
        if (phase, product) != self._scope:
            self._scope = (phase, product)
            limits = self._limits = self.tag.limits_for(phase, product)
            lows = [x for x in (limits.l, limits.ll) if x is not None] if limits else []
            highs = [x for x in (limits.h, limits.hh) if x is not None] if limits else []
            self._normal = (max(lows, default=-math.inf), min(highs, default=math.inf)) if limits else (
                math.inf, -math.inf)
        return self._limits

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        value = numeric(sample)
        if value is None:
            return None  # bad, missing or non-finite readings neither raise nor clear
        limits = self.limits(phase, product)
        if self.level is None:
            low, high = self._normal
            if low <= value <= high:
                self._pending = None
                return None
        found = classify(value, limits, self.level, self.rule.deadband) if limits else None
        wanted, limit = found if found else (None, None)
        if wanted == self.level:
            self._pending = None
            return None
        delay = self.rule.off_delay if wanted is None else self.rule.on_delay
        if delay > 0:
            if self._pending is None or self._pending.level != wanted:
                self._pending = _Pending(wanted, ts_us)
                return None
            if ts_us - self._pending.since_us < delay * US:
                return None
        self._pending = None
        return self.report(wanted, value, limit)

    def rescope(self, phase: str | None, product: str | None) -> Verdict | None:
        self._pending = None
        if self.level is not None and self.limits(phase, product) is None:
            return self.report(None, reason="limits no longer in force")
        return None

    def reset(self) -> None:
        super().reset()
        self._pending = None
