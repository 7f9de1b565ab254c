"""Trend rule: a least-squares line over a moving window predicts when a limit will be crossed.

The line is fitted to the readings of the last ``window`` seconds; its value *now* (not the noisy
last reading) and its slope give the time to each configured limit of the set in force. The rule
warns when the nearest predicted crossing is ``horizon`` seconds away or less, and clears once it
is more than ``horizon x (1 + hysteresis)`` away or the line turns away from every limit.

The window restarts whenever the limits in force change (a new phase): the readings of the
previous phase say nothing about this one, and a phase's first minutes — settling towards a new
setpoint — are not extrapolated across the boundary.

The fit is :class:`~blackbox.rules.regression.MovingFit`: O(1) per reading.
"""

from __future__ import annotations

import math

from blackbox.config import LimitSet, TagConfig, TrendRule
from blackbox.model import Sample
from blackbox.rules.base import Monitor, Verdict, numeric
from blackbox.rules.regression import MovingFit

SIDES = {"hh": 1, "h": 1, "l": -1, "ll": -1}


class TrendMonitor(Monitor):
    rule: TrendRule

    def __init__(self, rule: TrendRule, tag: TagConfig) -> None:
        super().__init__(rule)
        self.tag = tag
        self._fit = MovingFit(rule.window)
        self._min_samples = rule.min_samples
        self._horizon = rule.horizon
        self._clear_after = rule.horizon * (1 + rule.hysteresis)
        self._scope: tuple[str | None, str | None] | None = None
        self._targets: list[tuple[str, float, int]] = []
        self._limits: LimitSet | None = None

    # -- limits in force -------------------------------------------------------------------

    def _use_limits(self, phase: str | None, product: str | None) -> bool:
        """Look up the limits for this scope; return True if they changed from those of an earlier scope
        (the window restarts). The first lookup, after a start or a restart, changes nothing."""
        if (phase, product) == self._scope:
            return False
        first = self._scope is None
        self._scope = (phase, product)
        limits = self.tag.limits_for(phase, product)
        if limits is self._limits:
            return False
        self._limits = limits
        self._targets = [(lvl.upper(), getattr(limits, lvl), SIDES[lvl]) for lvl in self.rule.levels
                         if limits is not None and getattr(limits, lvl) is not None]
        self._fit.clear()
        return not first

    def rescope(self, phase: str | None, product: str | None) -> Verdict | None:
        if self._use_limits(phase, product) and self.level is not None:
            return self.report(None, reason="limits in force changed")
        return None

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        if (phase, product) != self._scope:
            self._use_limits(phase, product)
        targets = self._targets
        if not targets:
            return None
        value = numeric(sample)
        if value is None:
            return None
        fit = self._fit
        fit.add(ts_us, value)
        if fit.n < self._min_samples:
            return None
        line = fit.line()
        if line is None:
            return None
        slope, fitted = line  # per second; the line's value now
        eta, level, limit = math.inf, None, None
        for lvl, lim, side in targets:
            if slope * side > 0:  # heading towards this limit (negative: already beyond it)
                t = (lim - fitted) / slope
                if t < eta:
                    eta, level, limit = t, lvl, lim
        wanted = level if eta <= (self._clear_after if self.level is not None else self._horizon) else None
        if wanted == self.level:
            return None
        return self.report(wanted, value, limit if wanted else None,
                           eta_s=round(max(0.0, eta), 1) if math.isfinite(eta) else None,
                           slope_per_min=round(slope * 60, 6), fitted=round(fitted, 6))

    def reset(self) -> None:
        super().reset()
        self._fit.clear()
        self._scope = None
        self._limits = None
        self._targets = []
