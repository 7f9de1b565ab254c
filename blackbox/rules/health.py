"""Signal-health rules: rate of change, frozen value, stale tag, bad quality, disconnected source.

These judge the measurement rather than the process: a transmitter that hangs, a tag nobody
reads any more, a PLC that went away. Each is a small state machine over the readings of one tag
(or, for a source, over the agent's ``source.*`` events).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from blackbox.config.rules import BadQualityRule, DisconnectedRule, FrozenRule, RateOfChangeRule, StaleRule
from blackbox.model import EventDraft, Quality, Sample
from blackbox.rules.base import US, Monitor, Verdict, numeric
from blackbox.rules.regression import MovingFit

LEARN_SPACINGS = 9
"""Reading spacings a stale rule keeps to learn the tag's interval (their median)."""


class RateOfChangeMonitor(Monitor):
    """Rate = slope of the least-squares line through the readings of the last ``window`` seconds, in
    units per minute, so that noise on single readings does not trip it. It is judged once the
    readings span the whole window (with ``window: 0``, each reading against the previous one): a
    fit over the first few readings after the rule came into force would be as noisy as they are."""

    rule: RateOfChangeRule

    def __init__(self, rule: RateOfChangeRule) -> None:
        super().__init__(rule)
        self._fit = MovingFit(rule.window, cover=True)

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        value = numeric(sample)
        if value is None:
            return None
        self._fit.add(ts_us, value)
        line = self._fit.line(per_s=60.0)
        if line is None or self._fit.span_s < self.rule.window:
            return None
        rate = line[0]
        rise, fall = self.rule.max_rise, self.rule.max_fall
        if rise is not None and rate > rise:
            level, limit = "rise", rise
        elif fall is not None and -rate > fall:
            level, limit = "fall", -fall
        else:
            level, limit = None, None
        if level == self.level:
            return None
        return self.report(level, value, limit, rate_per_min=round(rate, 6))

    def reset(self) -> None:
        super().reset()
        self._fit.clear()


class FrozenMonitor(Monitor):
    """Frozen once ``samples`` consecutive good readings span no more than ``tolerance``."""

    rule: FrozenRule

    def __init__(self, rule: FrozenRule) -> None:
        super().__init__(rule)
        self._low = self._high = 0.0
        self._count = 0

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        value = numeric(sample)
        if value is None:
            return None  # a missing reading is not a moving one: the run goes on
        if self._count and max(self._high, value) - min(self._low, value) <= self.rule.tolerance:
            self._low, self._high = min(self._low, value), max(self._high, value)
            self._count += 1
        else:
            self._low = self._high = value
            self._count = 1
        if self._count >= self.rule.samples:
            return self.report("frozen", value, samples=self._count)
        return self.report(None, value)

    def reset(self) -> None:
        super().reset()
        self._count = 0

    def evidence(self) -> dict[str, Any] | None:
        return {"low": self._low, "high": self._high, "count": self._count}

    def restore_evidence(self, evidence: dict[str, Any]) -> None:
        self._low, self._high, self._count = float(evidence["low"]), float(evidence["high"]), int(evidence["count"])


class StaleMonitor(Monitor):
    """Stale when no reading (of any quality) arrived for ``intervals`` expected intervals."""

    rule: StaleRule

    def __init__(self, rule: StaleRule) -> None:
        super().__init__(rule)
        self._last_us: int | None = None
        self._watch_from_us: int | None = None
        self._spacings: deque[int] = deque(maxlen=LEARN_SPACINGS)

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        if self._last_us is not None and ts_us > self._last_us:
            self._spacings.append(ts_us - self._last_us)
        self._last_us = ts_us
        return self.report(None)

    def interval_us(self) -> float | None:
        """The expected spacing of readings: configured, or learned once three spacings were seen."""
        if self.rule.interval is not None:
            return self.rule.interval * US
        return statistics.median(self._spacings) if len(self._spacings) >= 3 else None

    def tick(self, ts_us: int) -> Verdict | None:
        if self._watch_from_us is None:
            self._watch_from_us = ts_us  # a tag never read is stale counted from when watching began
        interval = self.interval_us()
        since = self._last_us if self._last_us is not None else self._watch_from_us
        if interval is None or ts_us - since <= self.rule.intervals * interval:
            return None
        return self.report("stale", silent_s=round((ts_us - since) / US, 3),
                           interval_s=round(interval / US, 6))

    def reset(self) -> None:
        super().reset()
        self._last_us = self._watch_from_us = None
        self._spacings.clear()


class BadQualityMonitor(Monitor):
    """Raised after ``samples`` consecutive bad readings (a NaN or missing number is a bad reading)."""

    rule: BadQualityRule

    def __init__(self, rule: BadQualityRule) -> None:
        super().__init__(rule)
        self._bad = 0

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        v = sample.value
        bad = (sample.quality is Quality.BAD
               or (sample.quality is Quality.UNCERTAIN and self.rule.include_uncertain)
               or v is None or (isinstance(v, float) and not math.isfinite(v)))
        if not bad:
            self._bad = 0
            return self.report(None)
        self._bad += 1
        if self._bad < self.rule.samples:
            return None
        reason = sample.reason or (f"quality {sample.quality.value}" if sample.quality is not Quality.GOOD
                                   else "no value" if v is None else f"non-finite value {v}")
        return self.report("bad", None, reason=reason, samples=self._bad)

    def reset(self) -> None:
        super().reset()
        self._bad = 0


class DisconnectedMonitor(Monitor):
    """Raised when the source stays disconnected for ``on_delay`` seconds; cleared when it is back."""

    rule: DisconnectedRule

    def __init__(self, rule: DisconnectedRule) -> None:
        super().__init__(rule)
        self._since_us: int | None = None
        self._reason: str | None = None

    def event(self, draft: EventDraft, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        if not draft.type.startswith("source.") or draft.data.get("source", draft.subject) != self.rule.source:
            return None
        if draft.type == "source.connected":
            self._since_us = None
            return self.report(None)
        if draft.type == "source.disconnected" and self._since_us is None:
            self._since_us = draft.ts_us if draft.ts_us is not None else ts_us
            self._reason = draft.data.get("reason")
            return self.tick(ts_us)
        return None

    def tick(self, ts_us: int) -> Verdict | None:
        if self._since_us is None or ts_us - self._since_us < self.rule.on_delay * US:
            return None
        return self.report("disconnected", reason=self._reason, since_us=self._since_us)

    def reset(self) -> None:
        super().reset()
        self._since_us = None

    def state(self) -> dict[str, Any] | None:
        return {"since_us": self._since_us, "reason": self._reason} if self._since_us is not None else None

    def restore(self, state: dict[str, Any]) -> None:
        self._since_us, self._reason = state["since_us"], state.get("reason")
