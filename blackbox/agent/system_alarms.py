"""Alarms about the recorder itself (not about the process): the buffer lost data.

They are events like any rule's alarm (``alarm.raised`` / ``alarm.cleared``, critical) so that
they reach the store and the trace report, and they show in ``blackbox status`` and the metrics.
An alarm is raised once and cleared only after a quiet period with no further loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackbox.model import EventDraft

DATA_LOSS = "buffer.data_loss"
QUIET_BEFORE_CLEAR_US = 60_000_000
"""A loss alarm clears after this long without another loss."""


@dataclass
class _Active:
    since_us: int
    last_us: int
    reason: str


class SystemAlarms:
    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self._active: dict[str, _Active] = {k: _Active(**v) for k, v in (state or {}).items()}

    def state(self) -> dict[str, Any]:
        return {k: vars(a).copy() for k, a in self._active.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self._active = {k: _Active(**v) for k, v in state.items()}

    def rules(self) -> list[str]:
        """Rule ids of the active alarms."""
        return sorted(self._active)

    def active(self) -> list[tuple[str, str]]:
        """(subject, reason) of each active alarm."""
        return [(k, a.reason) for k, a in sorted(self._active.items())]

    def data_loss(self, reason: str, ts_us: int, detail: dict[str, Any]) -> list[EventDraft]:
        """Note a loss; the ``alarm.raised`` event if the alarm was not already active."""
        current = self._active.get(DATA_LOSS)
        if current is not None:
            current.last_us = ts_us
            return []
        self._active[DATA_LOSS] = _Active(ts_us, ts_us, reason)
        return [EventDraft("alarm.raised", "buffer", {
            "rule": DATA_LOSS, "tag": "buffer", "level": "DATA_LOSS", "priority": "critical",
            "reason": reason, **detail}, ts_us)]

    def tick(self, ts_us: int) -> list[EventDraft]:
        """``alarm.cleared`` for every alarm quiet long enough."""
        out = []
        for key, a in list(self._active.items()):
            if ts_us - a.last_us >= QUIET_BEFORE_CLEAR_US:
                del self._active[key]
                out.append(EventDraft("alarm.cleared", "buffer", {
                    "rule": key, "tag": "buffer", "level": "DATA_LOSS", "priority": "critical",
                    "reason": f"no further loss since {a.reason}"}, ts_us))
        return out
