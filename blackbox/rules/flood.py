"""Flood control (ISA-18.2 / EEMUA 191): chattering alarms, the flood indicator, top alarms by count.

* **Chattering.** An alarm that starts ``chatter_count`` times within ``chatter_window`` seconds
  is chattering (``alarm.chattering``). From then on its returns to normal are held: it clears
  only once its condition has stayed normal for ``chatter_release`` seconds, and re-entries in
  between raise nothing. So however often a signal crosses its limit, one alarm raises at most
  ``chatter_count`` times per chattering episode.
* **Flood.** More than ``flood_count`` alarms starting within ``flood_window`` seconds is a flood
  (``alarm.flood`` with state ``started``, the count and the alarms among the starts that made it);
  it ends when fewer than ``flood_end`` started within the window (state ``ended``, with how many
  started during the flood). Only the last ``flood_count + 1`` starts need remembering.
* **Top alarms.** Starts are counted per alarm in hourly buckets (a week kept), for the "top alarms
  by count" report (``blackbox alarms top``).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from blackbox.config.alarms import AlarmsConfig
from blackbox.model import EventDraft
from blackbox.rules.base import US

HOUR_US = 3600 * US
KEEP_HOURS = 7 * 24


class Chatter:
    """Chattering state of one alarm."""

    def __init__(self, settings: AlarmsConfig) -> None:
        self.count = settings.chatter_count
        self.window_s = settings.chatter_window
        self._window_us = settings.chatter_window * US
        self.release_us = settings.chatter_release * US
        self._starts: deque[int] = deque(maxlen=self.count)  # the last starts are all it takes
        self.active = False
        self.held_since_us: int | None = None
        """When the condition returned to normal while chattering (the clear is held), else ``None``."""

    def started(self, ts_us: int) -> bool:
        """Count a start; True when it makes the alarm chattering."""
        starts = self._starts
        starts.append(ts_us)
        if self.active or len(starts) < self.count or ts_us - starts[0] > self._window_us:
            return False
        self.active = True
        return True

    def last_us(self) -> int | None:
        """The latest start remembered."""
        return self._starts[-1] if self._starts else None

    def due(self, ts_us: int) -> bool:
        """Whether a held clear has been normal long enough to be reported."""
        return self.held_since_us is not None and ts_us - self.held_since_us >= self.release_us

    def end(self) -> None:
        self.active = False
        self.held_since_us = None
        self._starts.clear()

    def state(self, now_us: int) -> dict[str, Any] | None:
        """What survives a restart; ``None`` once no start of the window is left to count."""
        starts = [t for t in self._starts if now_us - t <= self._window_us]
        if not self.active and not starts:
            return None
        return {"active": self.active, "held": self.held_since_us, "starts": starts}

    def restore(self, state: dict[str, Any]) -> None:
        self.active, self.held_since_us = state["active"], state["held"]
        self._starts = deque(state["starts"], maxlen=self.count)


class Flood:
    """The flood indicator over the starts of every alarm of the gateway."""

    def __init__(self, settings: AlarmsConfig) -> None:
        self.settings = settings
        self._window_us = settings.flood_window * US
        # the last flood_count + 1 starts decide both "more than flood_count" and "fewer than flood_end"
        self._starts: deque[tuple[int, str]] = deque(maxlen=settings.flood_count + 1)
        self.active = False
        self.since_us: int | None = None
        self._during = 0

    def _prune(self, ts_us: int) -> None:
        while self._starts and ts_us - self._starts[0][0] > self._window_us:
            self._starts.popleft()

    def started(self, alarm_id: str, ts_us: int) -> list[EventDraft]:
        self._starts.append((ts_us, alarm_id))
        self._prune(ts_us)
        if self.active:
            self._during += 1
            return []
        count = len(self._starts)
        if count <= self.settings.flood_count:
            return []
        self.active, self.since_us, self._during = True, ts_us, count
        top = Counter(a for _, a in self._starts).most_common(5)
        return [EventDraft("alarm.flood", "flood", {
            "state": "started", "count": count, "window_s": self.settings.flood_window,
            "top": [{"alarm": a, "count": n} for a, n in top]}, ts_us)]

    def tick(self, ts_us: int) -> list[EventDraft]:
        self._prune(ts_us)
        if not self.active or len(self._starts) >= self.settings.flood_end:
            return []
        if self.since_us is None:
            raise RuntimeError("internal error: expected self.since_us is not None")
        event = EventDraft("alarm.flood", "flood", {
            "state": "ended", "duration_s": round((ts_us - self.since_us) / US, 3), "alarms": self._during}, ts_us)
        self.active, self.since_us, self._during = False, None, 0
        return [event]

    def state(self) -> dict[str, Any]:
        return {"active": self.active, "since": self.since_us, "during": self._during,
                "starts": [list(s) for s in self._starts]}

    def restore(self, state: dict[str, Any]) -> None:
        self.active, self.since_us, self._during = state["active"], state["since"], state["during"]
        self._starts = deque(((int(t), str(a)) for t, a in state["starts"]), maxlen=self.settings.flood_count + 1)


class StartCounts:
    """Alarm starts per alarm and hour, for the top-alarms report."""

    def __init__(self) -> None:
        self._hours: dict[str, dict[int, int]] = {}

    def add(self, alarm_id: str, ts_us: int) -> None:
        hour = ts_us // HOUR_US
        buckets = self._hours.setdefault(alarm_id, {})
        buckets[hour] = buckets.get(hour, 0) + 1
        if len(buckets) > KEEP_HOURS:
            for old in sorted(buckets)[:-KEEP_HOURS]:
                del buckets[old]

    def top(self, now_us: int, hours: float, n: int) -> list[tuple[str, int]]:
        """The ``n`` alarms that started most in the last ``hours`` (whole hours, the current one included)."""
        first = now_us // HOUR_US - max(0, int(hours) - 1)
        totals = Counter({a: sum(c for h, c in b.items() if h >= first) for a, b in self._hours.items()})
        return [(a, c) for a, c in totals.most_common(n) if c > 0]

    def state(self) -> dict[str, Any]:
        return {a: {str(h): c for h, c in b.items()} for a, b in self._hours.items()}

    def of(self, alarm_id: str) -> dict[str, int] | None:
        """The counts of one alarm as :meth:`state` gives them, ``None`` if it never started."""
        buckets = self._hours.get(alarm_id)
        return None if buckets is None else {str(h): c for h, c in buckets.items()}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back (part of) :meth:`state`: the counts of the alarms it names are replaced."""
        self._hours.update({a: {int(h): int(c) for h, c in b.items()} for a, b in state.items()})
