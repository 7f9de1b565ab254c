"""The rule engine: routes each reading to the rules that watch its tag."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from blackbox.config import Rule, TagConfig
from blackbox.model import EventDraft, Quality, Sample
from blackbox.rules.threshold import ThresholdMonitor


class RuleEngine:
    """Evaluates every configured rule on the samples of one poll cycle."""

    def __init__(self, rules: Iterable[Rule], tags: dict[str, TagConfig]) -> None:
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

    def active_alarms(self) -> list[tuple[str, str]]:
        """(tag, level) of every active alarm."""
        return [(m.tag.name, m.active) for ms in self._by_tag.values() for m in ms if m.active]
