"""The rule engine: routes each reading to the rules that watch its tag."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from blackbox.agent.control import Handler
from blackbox.config import Rule, TagConfig
from blackbox.model import EventDraft, Quality, Sample
from blackbox.rules.threshold import ThresholdMonitor


class RuleEngine:
    """Evaluates every configured rule on the samples of one poll cycle."""

    def __init__(self, rules: Iterable[Rule], tags: dict[str, TagConfig], state: dict[str, Any] | None = None) -> None:
        self._by_tag: dict[str, list[ThresholdMonitor]] = defaultdict(list)
        for rule in rules:
            self._by_tag[rule.tag].append(ThresholdMonitor(rule, tags[rule.tag]))

    def evaluate(self, samples: Iterable[Sample], ts_us: int, phase: str | None,
                 product: str | None) -> list[EventDraft]:
        out: list[EventDraft] = []
        for s in samples:
            monitors = self._by_tag.get(s.tag)
            if not monitors or s.quality is not Quality.GOOD:
                continue
            v = s.value
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                continue
            for m in monitors:
                out.extend(m.evaluate(float(v), ts_us, phase, product))
        return out

    def tick(self, ts_us: int, phase: str | None, product: str | None) -> list[EventDraft]:
        """Time-driven evaluation without a new reading; threshold rules need none."""
        return []

    def state(self) -> dict[str, Any]:
        """Rule state to keep across restarts (saved with every buffer commit)."""
        return {}

    def control_handlers(self) -> dict[str, Handler]:
        """Commands of the control socket this engine answers (e.g. alarm acknowledgement)."""
        return {}

    def active_alarms(self) -> list[tuple[str, str]]:
        """(tag, level) of every active alarm."""
        return [(m.tag.name, m.active) for ms in self._by_tag.values() for m in ms if m.active]
