"""Report by exception: record a tag's reading only when it says something new, or is due again.

A tag with a ``deadband`` is recorded when its value moved more than the deadband away from the
value last *recorded* (so a slow creep is caught once it adds up), when its quality or reason
changed, or when ``heartbeat`` seconds (60 by default) passed since it was last recorded. The
heartbeat keeps "unchanged" and "not read" distinguishable: a tag that is read but steady still
appears at least once per heartbeat, while a source that is not read shows a
``source.disconnected`` event instead.

For a subscribed source the server only reports changes, so :meth:`ExceptionFilter.due` repeats
the last value of every tag with a heartbeat when it is due (its source timestamp unchanged: it
is the same value, recorded again).

Tags without ``deadband`` or ``heartbeat`` pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blackbox.columns import SampleColumns
from blackbox.config.sources import TagConfig
from blackbox.model import Sample

DEFAULT_HEARTBEAT_S = 60.0


@dataclass(frozen=True, slots=True)
class _Rule:
    deadband: float | None
    heartbeat: float | None


@dataclass(slots=True)
class _Last:
    sample: Sample
    at: float
    """Monotonic time it was recorded."""


def _rule(tag: TagConfig) -> _Rule | None:
    if tag.deadband is None and tag.heartbeat is None:
        return None
    heartbeat = tag.heartbeat if tag.heartbeat is not None else DEFAULT_HEARTBEAT_S
    return _Rule(tag.deadband, heartbeat)


def _moved(value: object, last: object, deadband: float) -> bool:
    numeric = (int, float)
    if isinstance(value, numeric) and isinstance(last, numeric) and not isinstance(value, bool) \
            and not isinstance(last, bool):
        return abs(value - last) > deadband
    return value != last


class ExceptionFilter:
    """The report-by-exception state of one source's tags."""

    def __init__(self, tags: Iterable[TagConfig]) -> None:
        self._rules = {t.name: rule for t in tags if (rule := _rule(t)) is not None}
        self._last: dict[str, _Last] = {}

    @property
    def active(self) -> bool:
        """Whether any tag of the source reports by exception or has a heartbeat."""
        return bool(self._rules)

    def admit(self, samples: Sequence[Sample], now: float) -> Sequence[Sample]:
        """The samples to record out of one cycle's (or one notification's) ``samples``.

        Columns stay columns, and only the samples of tags that report by exception are looked at.
        """
        rules = self._rules
        if not rules:
            return samples
        if isinstance(samples, SampleColumns):
            keep = [i for i, tag in enumerate(samples.tags)
                    if tag not in rules or self._admit_one(samples[i], rules[tag], now)]
            return samples if len(keep) == len(samples) else samples.pick(keep)
        return [s for s in samples if s.tag not in rules or self._admit_one(s, rules[s.tag], now)]

    def _admit_one(self, sample: Sample, rule: _Rule, now: float) -> bool:
        last = self._last.get(sample.tag)
        if (last is None or rule.deadband is None
                or sample.quality != last.sample.quality or sample.reason != last.sample.reason
                or _moved(sample.value, last.sample.value, rule.deadband)
                or (rule.heartbeat is not None and now - last.at >= rule.heartbeat)):
            self._last[sample.tag] = _Last(sample, now)
            return True
        return False

    def due(self, now: float) -> list[Sample]:
        """The last value of every tag whose heartbeat has run out since it was last recorded."""
        out = []
        for name, last in self._last.items():
            heartbeat = self._rules[name].heartbeat
            if heartbeat is not None and now - last.at >= heartbeat:
                last.at = now
                out.append(last.sample)
        return out

    def next_due_in(self, now: float) -> float | None:
        """Seconds until :meth:`due` has something (``None``: never, no tag has a heartbeat)."""
        waits = [last.at + hb - now for name, last in self._last.items()
                 if (hb := self._rules[name].heartbeat) is not None]
        return max(0.0, min(waits)) if waits else None

    def forget(self) -> None:
        """After a reconnect: record the next reading of every tag whatever it is."""
        self._last.clear()
