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
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic_ns()


def wall_minus_boot_us() -> int:
    """The wall clock's offset from ``CLOCK_BOOTTIME`` now: it changes only when the wall clock steps."""
    return (time.time_ns() - _boottime_ns()) // 1000


class StepWatch:
    """The one rule for a wall-clock step, used for the ``clock.jump`` event and the batch header's
    ``clock`` status: the wall clock's offset from a clock that never steps (``wall - boottime``)
    moved by more than the threshold since the previous look."""

    def __init__(self, threshold_us: int) -> None:
        self.threshold_us = threshold_us
        self._offset_us: int | None = None

    def step_us(self, offset_us: int) -> int | None:
        """The step since the previous offset (signed, µs) if beyond the threshold, else ``None``.

        Remembers ``offset_us`` for the next call; the first call has nothing to compare with.
        """
        previous, self._offset_us = self._offset_us, offset_us
        if previous is None:
            return None
        step = offset_us - previous
        return step if abs(step) > self.threshold_us else None


class GatewayClock:
    def __init__(self, threshold_s: float = 1.0, floor_us: int = 0, *, wall_ns: Nanos = time.time_ns,
                 steady_ns: Nanos = _boottime_ns) -> None:
        """``floor_us`` is the last timestamp issued before a restart (saved with every commit)."""
        self._threshold_us = int(threshold_s * 1_000_000)
        self._wall_ns = wall_ns
        self._steady_ns = steady_ns
        self.issued_us = floor_us
        """The last timestamp handed out; the next is never smaller."""
        self._started = False
        self._steps = StepWatch(self._threshold_us)
        self.jumps = 0

    def now(self) -> tuple[int, EventDraft | None]:
        """A timestamp for the next commit, and the ``clock.jump`` event if the wall clock jumped."""
        wall = self._wall_ns() // 1000
        steady = self._steady_ns() // 1000
        jump: EventDraft | None = None
        step = self._steps.step_us(wall - steady)
        if not self._started:
            self._started = True
            if wall < self.issued_us - self._threshold_us:  # stepped back while the agent was stopped
                jump = self._jump(self.issued_us, wall, "the wall clock is behind the last time recorded "
                                  "before the agent started")
        elif step is not None:
            jump = self._jump(wall - step, wall, None)  # expected: the previous wall time + the steady time since
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
