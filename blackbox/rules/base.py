"""What every rule family shares: the verdict a monitor reaches and the monitor interface.

A *monitor* is the evaluation state of one configured rule. It watches readings (and, for some
families, time or events) and reports a :class:`Verdict` only when its alarm condition changes:
a level (``"H"``, ``"frozen"``, ``"we2"``…) or ``None`` for normal. What happens next —
acknowledgement, shelving, suppression, chattering — is the alarm lifecycle's business
(:mod:`blackbox.rules.lifecycle`), so that every family gets it the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from blackbox.config.rules import RuleBase
from blackbox.model import EventDraft, Quality, Sample

US = 1_000_000
_GOOD = Quality.GOOD


@dataclass(slots=True)
class Verdict:
    """A change of a rule's alarm condition: the new level (``None``: back to normal) and why."""

    level: str | None
    value: float | None = None
    limit: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    """Extra facts for the event (a predicted crossing time, the run rule that fired…)."""


def numeric(sample: Sample) -> float | None:
    """The sample's value when it is a good, finite number; ``None`` for anything a rule cannot judge."""
    v = sample.value
    if v.__class__ is float and sample.quality is _GOOD:  # the common case, first and fast
        return v if v - v == 0.0 else None  # inf - inf and nan - nan are nan
    if sample.quality is not _GOOD or isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


class Monitor:
    """The state of one rule. Subclasses override the hooks their family needs.

    ``level`` is the condition as last reported; a hook returns a :class:`Verdict` only when it
    changes, so that an unchanged condition costs nothing downstream.
    """

    def __init__(self, rule: RuleBase) -> None:
        self.rule = rule
        self.level: str | None = None

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        """A reading of the rule's tag (any quality) while the rule is in force."""
        return None

    def tick(self, ts_us: int) -> Verdict | None:
        """Time passes without a reading (called about every second)."""
        return None

    def event(self, draft: EventDraft, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        """An event of the record (source and batch events) while the rule is in force."""
        return None

    def rescope(self, phase: str | None, product: str | None) -> Verdict | None:
        """The phase or product changed while the rule stays in force (limits in force may differ)."""
        return None

    def reset(self) -> None:
        """The rule went out of force (or out of service): forget the signal's history."""
        self.level = None

    def state(self) -> dict[str, Any] | None:
        """What cannot be rebuilt from new readings (a learned baseline, batch history), or ``None``.

        Small on purpose: the agent saves it with every buffer commit.
        """
        return None

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` returned before a restart."""

    def changing(self) -> bool:
        """Whether a reading may change :meth:`state` or :meth:`evidence` without a verdict.

        The engine re-reads the saved state of these rules at every commit; the others only
        when something happened to them (a verdict, an event, a change of scope, an operator).
        """
        return self.level is not None

    def evidence(self) -> dict[str, Any] | None:
        """The statistic behind an active condition (an EWMA, run counters), saved only while the
        condition is active, so that a restart neither clears nor repeats an active alarm."""
        return None

    def restore_evidence(self, evidence: dict[str, Any]) -> None:
        """Take back what :meth:`evidence` returned before a restart."""

    def report(self, level: str | None, value: float | None = None, limit: float | None = None,
               **detail: Any) -> Verdict | None:
        """A verdict if ``level`` differs from the one reported, else ``None``."""
        if level == self.level:
            return None
        self.level = level
        return Verdict(level, value, limit, detail)
