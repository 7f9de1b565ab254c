"""SPC run rules: Western Electric 1-4 and Nelson 1-8, against a centre line and sigma.

Each point becomes z = (x - centre) / sigma. The rules, exactly as the two rule sets define them
("beyond k sigma" is strictly more than k sigma from the centre; a point exactly on a zone boundary
belongs to the inner zone; a point exactly on the centre line is on neither side):

==========  ===================================================================================
we1         1 point beyond 3 sigma (either side).
we2         2 of 3 consecutive points beyond 2 sigma, on the same side.
we3         4 of 5 consecutive points beyond 1 sigma, on the same side.
we4         8 consecutive points on the same side of the centre line.
nelson1     1 point beyond 3 sigma.
nelson2     9 consecutive points on the same side of the centre line.
nelson3     6 consecutive points, each strictly higher (or each strictly lower) than the one before.
nelson4     14 consecutive points alternating up and down (13 changes of direction; a repeat breaks it).
nelson5     2 of 3 consecutive points beyond 2 sigma, on the same side.
nelson6     4 of 5 consecutive points beyond 1 sigma, on the same side.
nelson7     15 consecutive points within 1 sigma (either side).
nelson8     8 consecutive points beyond 1 sigma, with points on both sides.
==========  ===================================================================================

A rule needs as many points as its window since the rule came into force ("2 of 3" needs three
points). The alarm's level is the first violated rule in the configured order; it clears after
``clear_after`` points without any violation. Everything is kept as run counters and bit
histories (bit 0 = newest point), so a point costs the same whatever the windows.
"""

from __future__ import annotations

from typing import Any

from blackbox.config.rules import SpcRule
from blackbox.rules.base import Verdict
from blackbox.rules.baseline import ControlMonitor

MASK = (1 << 15) - 1  # the longest window is 15 points
FLAG = {"we1": 0, "nelson1": 0, "we2": 1, "nelson5": 1, "we3": 2, "nelson6": 2, "we4": 3, "nelson2": 4,
        "nelson3": 5, "nelson4": 6, "nelson7": 7, "nelson8": 8}
"""Each check's condition in the tuple of conditions a point computes (the rule sets share some)."""


class SpcMonitor(ControlMonitor):
    rule: SpcRule

    def __init__(self, rule: SpcRule) -> None:
        super().__init__(rule)
        self._checks = [(name, FLAG[name]) for name in rule.checks]
        self.restart()

    def restart(self) -> None:
        self._n = 0
        self._prev: float | None = None
        self._above2 = self._below2 = self._above1 = self._below1 = 0  # bit histories
        self._side = 0
        self._side_run = 0  # consecutive points on the side ``_side``
        self._up_run = self._down_run = 0  # points in the current strictly rising / falling run
        self._last_step = 0
        self._alt_run = 0  # points in the current alternating run
        self._in1_run = 0  # consecutive points within 1 sigma
        self._out1_run = 0  # consecutive points beyond 1 sigma
        self._z = 0.0
        self._clean = 0

    def point(self, x: float, centre: float, sigma: float) -> Verdict | None:
        z = (x - centre) / sigma
        self._z = z
        self._n += 1
        self._above2 = ((self._above2 << 1) | (z > 2)) & MASK
        self._below2 = ((self._below2 << 1) | (z < -2)) & MASK
        self._above1 = ((self._above1 << 1) | (z > 1)) & MASK
        self._below1 = ((self._below1 << 1) | (z < -1)) & MASK
        side = (z > 0) - (z < 0)
        self._side_run = self._side_run + 1 if side and side == self._side else (1 if side else 0)
        self._side = side
        if abs(z) > 1:
            self._out1_run += 1
            self._in1_run = 0
        else:
            self._in1_run += 1
            self._out1_run = 0
        prev = self._prev
        if prev is None:
            self._up_run = self._down_run = self._alt_run = 1
        else:
            step = (x > prev) - (x < prev)
            self._up_run = self._up_run + 1 if step > 0 else 1
            self._down_run = self._down_run + 1 if step < 0 else 1
            if step == 0:
                self._alt_run = 1
            elif self._last_step and step == -self._last_step:
                self._alt_run += 1
            else:
                self._alt_run = 2
            self._last_step = step
        self._prev = x

        az = abs(z)
        n = self._n
        out1 = self._out1_run
        flags = (  # every distinct condition once; checks are names for them (see FLAG)
            az > 3,
            n >= 3 and ((self._above2 & 0b111).bit_count() >= 2 or (self._below2 & 0b111).bit_count() >= 2),
            n >= 5 and ((self._above1 & 0b11111).bit_count() >= 4 or (self._below1 & 0b11111).bit_count() >= 4),
            self._side_run >= 8,
            self._side_run >= 9,
            self._up_run >= 6 or self._down_run >= 6,
            self._alt_run >= 14,
            self._in1_run >= 15,
            out1 >= 8 and bool(self._above1 & 0xFF) and bool(self._below1 & 0xFF),
        )
        if True in flags:
            violated = [name for name, i in self._checks if flags[i]]
            if violated:
                self._clean = 0
                if violated[0] == self.level:
                    return None
                return self.report(violated[0], x, None, z=round(z, 4), violated=violated, centre=centre,
                                   sigma=sigma)
        self._clean += 1
        if self.level is not None and self._clean >= self.rule.clear_after:
            return self.report(None, x, None, z=round(z, 4), centre=centre, sigma=sigma)
        return None

    def evidence(self) -> dict[str, Any] | None:
        return {"n": self._n, "prev": self._prev, "bits": [self._above2, self._below2, self._above1, self._below1],
                "runs": [self._side, self._side_run, self._up_run, self._down_run, self._last_step, self._alt_run,
                         self._in1_run, self._out1_run, self._clean], "z": self._z}

    def restore_evidence(self, state: dict[str, Any]) -> None:
        self._n, self._prev, self._z = state["n"], state["prev"], state["z"]
        self._above2, self._below2, self._above1, self._below1 = state["bits"]
        (self._side, self._side_run, self._up_run, self._down_run, self._last_step, self._alt_run, self._in1_run,
         self._out1_run, self._clean) = state["runs"]
