"""The gateway's timestamps: wall-clock time, checked against a clock that cannot jump.

The wall clock can step (NTP correcting a wrong RTC, an operator setting the time, a resume from
suspend). Each reading needs a UTC time, so the agent keeps using it, but compares every reading
of it with the time elapsed on ``CLOCK_BOOTTIME`` (which counts suspend and never steps) since the
previous one. A disagreement beyond the threshold is a jump, recorded as a ``clock.jump`` event.

Timestamps issued never go backwards, so they are monotonic in sequence order: after a backward
step the clock *holds* at the last time issued until the wall clock passes it again (the
``clock.jump`` event says so, with both times). A forward step is followed at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from blackbox.model import EventDraft

Nanos = Callable[[], int]


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class GatewayClock:
    def __init__(self, threshold_s: float = 1.0, floor_us: int = 0, *, wall_ns: Nanos = time.time_ns,
                 steady_ns: Nanos = _boottime_ns) -> None:
        """``floor_us`` is the last timestamp issued before a restart (saved with every commit)."""
        self._threshold_us = int(threshold_s * 1_000_000)
        self._wall_ns = wall_ns
        self._steady_ns = steady_ns
        self.issued_us = floor_us
        """The last timestamp handed out; the next is never smaller."""
        self._last_wall_us: int | None = None
        self._last_steady_us = 0
        self.jumps = 0

    def now(self) -> tuple[int, EventDraft | None]:
        """A timestamp for the next commit, and the ``clock.jump`` event if the wall clock jumped."""
        wall = self._wall_ns() // 1000
        steady = self._steady_ns() // 1000
        jump: EventDraft | None = None
        if self._last_wall_us is None:
            if wall < self.issued_us - self._threshold_us:  # stepped back while the agent was stopped
                jump = self._jump(self.issued_us, wall, "the wall clock is behind the last time recorded "
                                  "before the agent started")
        else:
            expected = self._last_wall_us + (steady - self._last_steady_us)
            if abs(wall - expected) > self._threshold_us:
                jump = self._jump(expected, wall, None)
        self._last_wall_us, self._last_steady_us = wall, steady
        self.issued_us = max(wall, self.issued_us)
        return self.issued_us, jump

    def _jump(self, expected_us: int, wall_us: int, note: str | None) -> EventDraft:
        self.jumps += 1
        delta = wall_us - expected_us
        data: dict[str, object] = {"from_us": expected_us, "to_us": wall_us, "delta_us": delta,
                                   "direction": "forward" if delta > 0 else "backward"}
        if wall_us < self.issued_us:
            data["held_until_us"] = self.issued_us  # timestamps hold here until the wall clock passes it
        if note:
            data["note"] = note
        return EventDraft("clock.jump", "gateway", data)
