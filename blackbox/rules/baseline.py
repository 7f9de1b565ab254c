"""Control limits — a centre and a sigma — configured or learned from a reference period.

SPC run rules, EWMA and CUSUM judge points by their distance from a centre line in sigmas. Either
is configured (the recipe's target, the filler's known capability) or learned from the first
``reference_samples`` points after the rule comes into force: the centre as their mean and sigma
as their average moving range divided by d2 = 1.128, the estimator of an individuals chart, which
a slow drift inside the reference period does not inflate the way a standard deviation would.
Points of the reference period are not judged. A reference period without any movement (zero
moving range) cannot give control limits; it is discarded and learning starts again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from blackbox.config.rules import ControlRule
from blackbox.model import Sample
from blackbox.rules.base import Monitor, Verdict, numeric

D2 = 1.128
"""Expected range of two independent normal points, in sigmas (the moving-range constant d2)."""


class Baseline:
    """Centre and sigma of one rule; learns what the configuration leaves out."""

    def __init__(self, rule: ControlRule) -> None:
        self._configured = (rule.centre, rule.sigma)
        self._samples = rule.reference_samples or 0
        self.centre, self.sigma = self._configured
        self._forget_partial()

    def _forget_partial(self) -> None:
        self._n = 0
        self._sum = 0.0
        self._mr_sum = 0.0
        self._previous: float | None = None

    @property
    def ready(self) -> bool:
        return self.centre is not None and self.sigma is not None

    def forget(self) -> None:
        """Drop learned values (``relearn``): the next points are a new reference period."""
        self.centre, self.sigma = self._configured
        self._forget_partial()

    def learn(self, x: float) -> None:
        """Take one point of the reference period."""
        self._n += 1
        self._sum += x
        if self._previous is not None:
            self._mr_sum += abs(x - self._previous)
        self._previous = x
        if self._n < self._samples:
            return
        sigma = self._mr_sum / (self._n - 1) / D2
        if self._configured[1] is None and sigma <= 0:
            self._forget_partial()  # a constant signal has no control limits: learn again
            return
        self.centre = self._configured[0] if self._configured[0] is not None else self._sum / self._n
        self.sigma = self._configured[1] if self._configured[1] is not None else sigma
        self._forget_partial()

    def state(self) -> dict[str, Any] | None:
        """Learned values and a reference period in progress; ``None`` when everything is configured."""
        if None not in self._configured:
            return None
        return {"centre": self.centre, "sigma": self.sigma, "n": self._n, "sum": self._sum, "mr": self._mr_sum,
                "prev": self._previous}

    def restore(self, state: dict[str, Any]) -> None:
        self.centre, self.sigma = state["centre"], state["sigma"]
        self._n, self._sum, self._mr_sum, self._previous = state["n"], state["sum"], state["mr"], state["prev"]


class ControlMonitor(Monitor, ABC):
    """Base of the rules that judge points against control limits; subclasses judge one point."""

    rule: ControlRule

    def __init__(self, rule: ControlRule) -> None:
        super().__init__(rule)
        self.baseline = Baseline(rule)

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        x = numeric(sample)
        if x is None:
            return None
        baseline = self.baseline
        if not baseline.ready:
            baseline.learn(x)
            return None
        if baseline.centre is None or baseline.sigma is None:
            raise RuntimeError("internal error: a baseline in use has no centre or sigma")
        return self.point(x, baseline.centre, baseline.sigma)

    @abstractmethod
    def point(self, x: float, centre: float, sigma: float) -> Verdict | None:
        """Judge one point once centre and sigma are known."""

    @abstractmethod
    def restart(self) -> None:
        """Forget the points judged so far (the statistic starts again at the centre)."""

    def reset(self) -> None:
        super().reset()
        if self.rule.relearn:
            self.baseline.forget()
        self.restart()

    def state(self) -> dict[str, Any] | None:
        return self.baseline.state()

    def changing(self) -> bool:
        return self.level is not None or not self.baseline.ready  # a reference period learns from every point

    def restore(self, state: dict[str, Any]) -> None:
        self.baseline.restore(state)
