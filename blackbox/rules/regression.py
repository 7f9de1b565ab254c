"""A least-squares line through the readings of a moving time window, at O(1) per reading.

Used by the trend rule (where is the value heading) and the rate-of-change rule (how fast is it
moving): a slope fitted to every reading of the window is far less noisy than the difference of
two readings. The sums are kept incrementally and recomputed exactly every
:data:`RECOMPUTE_EVERY` readings, so that rounding cannot accumulate over months of running.
"""

from __future__ import annotations

import math
from collections import deque

US = 1_000_000
RECOMPUTE_EVERY = 4096


class MovingFit:
    """Readings of the last ``window_s`` seconds.

    With ``cover``, the newest reading at or before the window's start is kept too, so that once
    there is enough history the fit spans the whole window (:attr:`span_s`) whatever the spacing.
    """

    def __init__(self, window_s: float, cover: bool = False) -> None:
        self._cover = cover
        self._window_s = window_s
        self._points: deque[tuple[float, float]] = deque()  # (seconds since origin, value)
        self.clear()

    def clear(self) -> None:
        self._points.clear()
        self._origin_us = 0
        self.n = 0
        self._st = self._sv = self._stt = self._stv = 0.0
        self._updates = 0

    def add(self, ts_us: int, value: float) -> None:
        points = self._points
        if not points:
            self._origin_us = ts_us
        t = (ts_us - self._origin_us) / US
        points.append((t, value))
        # the sums in locals: this runs for every reading of every trend and rate rule
        n, st, sv, stt, stv = self.n + 1, self._st + t, self._sv + value, self._stt + t * t, self._stv + t * value
        start = t - self._window_s
        if self._cover:  # keep the newest reading at or before the start
            while n > 2 and points[1][0] <= start:
                t0, v0 = points.popleft()
                n, st, sv, stt, stv = n - 1, st - t0, sv - v0, stt - t0 * t0, stv - t0 * v0
        else:
            while points[0][0] < start:
                t0, v0 = points.popleft()
                n, st, sv, stt, stv = n - 1, st - t0, sv - v0, stt - t0 * t0, stv - t0 * v0
        self.n, self._st, self._sv, self._stt, self._stv = n, st, sv, stt, stv
        self._updates += 1
        if self._updates >= RECOMPUTE_EVERY:
            self._recompute()

    def _recompute(self) -> None:
        """Exact sums from the readings kept, re-origined at the oldest (bounded magnitudes)."""
        self._updates = 0
        points = self._points
        shift = points[0][0]
        self._origin_us += round(shift * US)
        rebased = [(t - shift, v) for t, v in points]
        points.clear()
        points.extend(rebased)
        self._st = math.fsum(t for t, _ in points)
        self._sv = math.fsum(v for _, v in points)
        self._stt = math.fsum(t * t for t, _ in points)
        self._stv = math.fsum(t * v for t, v in points)

    @property
    def span_s(self) -> float:
        """Seconds between the oldest and the newest reading kept."""
        return self._points[-1][0] - self._points[0][0] if self._points else 0.0

    def line(self, per_s: float = 1.0) -> tuple[float, float] | None:
        """(slope per ``per_s`` seconds, the line's value at the newest reading); ``None`` below two
        readings at distinct times."""
        n = self.n
        spread = n * self._stt - self._st * self._st
        if n < 2 or spread <= 0:
            return None
        rise = n * self._stv - self._st * self._sv
        slope = rise / spread  # per second
        now = self._points[-1][0]
        return rise * per_s / spread, (self._sv - slope * self._st) / n + slope * now
