"""Slow-drift rules: EWMA and tabular CUSUM, against a centre and sigma (configured or learned).

Both accumulate evidence over many points, so they see a shift of a fraction of a sigma that no
single point (and no threshold) shows — a filler nozzle wearing, an ion-exchange resin tiring.

* **EWMA** (lambda, L): z_i = lambda x_i + (1 - lambda) z_{i-1}, z_0 = centre; it alarms when z_i
  leaves centre +/- L sigma sqrt(lambda / (2 - lambda) (1 - (1 - lambda)^(2i))) — the exact
  limits, narrower for the first points — and clears when z_i is back inside.
* **Tabular CUSUM** (k, h in sigmas): C+_i = max(0, C+_{i-1} + x_i - (centre + k sigma)),
  C-_i = max(0, C-_{i-1} + (centre - k sigma) - x_i); it alarms when C+ or C- exceeds h sigma
  and clears when it is back at or below.

Levels are ``high`` and ``low``; ``sides`` limits a rule to one of them.
"""

from __future__ import annotations

import math
from typing import Any

from blackbox.config.rules import CusumRule, EwmaRule
from blackbox.rules.base import Verdict
from blackbox.rules.baseline import ControlMonitor


class EwmaMonitor(ControlMonitor):
    rule: EwmaRule

    def __init__(self, rule: EwmaRule) -> None:
        super().__init__(rule)
        self._keep = 1.0 - rule.lam
        self._spread = rule.lam / (2.0 - rule.lam)
        self._high = rule.sides in ("both", "high")
        self._low = rule.sides in ("both", "low")
        self.restart()

    def restart(self) -> None:
        self._z: float | None = None
        self._decay = 1.0  # (1 - lambda)^(2 i)

    def point(self, x: float, centre: float, sigma: float) -> Verdict | None:
        lam = self.rule.lam
        z = centre if self._z is None else self._z
        z = lam * x + self._keep * z
        self._z = z
        self._decay *= self._keep * self._keep
        width = self.rule.L * sigma * math.sqrt(self._spread * (1.0 - self._decay))
        if self._high and z > centre + width:
            level, limit = "high", centre + width
        elif self._low and z < centre - width:
            level, limit = "low", centre - width
        else:
            level, limit = None, None
        if level == self.level:
            return None
        return self.report(level, x, None if limit is None else round(limit, 6), ewma=round(z, 6),
                           width=round(width, 6), centre=centre, sigma=sigma)

    def evidence(self) -> dict[str, Any] | None:
        return {"z": self._z, "decay": self._decay}

    def restore_evidence(self, state: dict[str, Any]) -> None:
        self._z, self._decay = state["z"], state["decay"]


class CusumMonitor(ControlMonitor):
    rule: CusumRule

    def __init__(self, rule: CusumRule) -> None:
        super().__init__(rule)
        self._high = rule.sides in ("both", "high")
        self._low = rule.sides in ("both", "low")
        self.restart()

    def restart(self) -> None:
        self._plus = self._minus = 0.0

    def point(self, x: float, centre: float, sigma: float) -> Verdict | None:
        slack = self.rule.k * sigma
        self._plus = max(0.0, self._plus + x - (centre + slack))
        self._minus = max(0.0, self._minus + (centre - slack) - x)
        decision = self.rule.h * sigma
        if self._high and self._plus > decision:
            level: str | None = "high"
        elif self._low and self._minus > decision:
            level = "low"
        else:
            level = None
        if level == self.level:
            return None
        return self.report(level, x, None, c_plus=round(self._plus, 6), c_minus=round(self._minus, 6),
                           decision=round(decision, 6), centre=centre, sigma=sigma)

    def evidence(self) -> dict[str, Any] | None:
        return {"plus": self._plus, "minus": self._minus}

    def restore_evidence(self, state: dict[str, Any]) -> None:
        self._plus, self._minus = state["plus"], state["minus"]
