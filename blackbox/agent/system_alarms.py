"""Alarms about the recorder itself (not about the process): the buffer lost data, or the store's
acknowledgements cannot be trusted (a receipt refused: ``uplink.bad_receipt``; the store's log
not consistent with what the gateway saw: ``uplink.log_inconsistent``).

The data-loss alarm (id ``buffer.data_loss``, critical) goes through the same lifecycle as a
rule's alarm (:mod:`blackbox.rules.lifecycle`, after ISA-18.2): raised at the first loss (active,
unacknowledged), cleared only after a quiet period with no further loss, and acknowledged, shelved
or taken out of service by an operator with ``blackbox alarms`` like any other (the rule engine
lists it with its own). Every transition is an event (``alarm.raised``, ``alarm.cleared``,
``alarm.acknowledged``…) that reaches the store and the trace report; it shows in ``blackbox
status`` and the metrics. Taken out of service it raises nothing; the ``buffer.gap`` events that
account for each loss are recorded regardless. The uplink alarms follow the same lifecycle: raised
at the first problem, cleared after a quiet period without another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from blackbox.config import AlarmsConfig, TagRule
from blackbox.model import EventDraft
from blackbox.rules.base import Verdict
from blackbox.rules.lifecycle import Alarm
from blackbox.uplink.forwarder import BAD_RECEIPT, LOG_INCONSISTENT

DATA_LOSS = "buffer.data_loss"
UPLINK_ALARMS = (BAD_RECEIPT, LOG_INCONSISTENT)
QUIET_BEFORE_CLEAR_US = 60_000_000
"""A loss (or uplink) alarm clears after this long without another loss (or problem)."""


class SystemRule(TagRule):
    """The identity of a recorder alarm for the lifecycle: it is not configured and judges nothing itself."""

    type: Literal["system"] = "system"


class SystemAlarms:
    def __init__(self, state: dict[str, Any] | None = None, settings: AlarmsConfig | None = None) -> None:
        self.data_loss_alarm = Alarm(SystemRule(id=DATA_LOSS, tag="buffer", priority="critical"),
                                     settings or AlarmsConfig())
        self._last_loss_us: int | None = None
        self._reason = ""
        self._uplink = {rule: _Uplink(Alarm(SystemRule(id=rule, tag="uplink", priority="critical"),
                                            settings or AlarmsConfig())) for rule in UPLINK_ALARMS}
        self.restore(state or {})

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        alarm = self.data_loss_alarm
        saved = alarm.state_dict(self._last_loss_us or 0)
        if saved is not None or alarm.level is not None:
            out[DATA_LOSS] = {"alarm": saved, "last_us": self._last_loss_us, "reason": self._reason}
        for rule, u in self._uplink.items():
            saved = u.alarm.state_dict(u.last_us or 0)
            if saved is not None or u.alarm.level is not None:
                out[rule] = {"alarm": saved, "last_us": u.last_us, "reason": u.reason}
        return out

    def restore(self, state: dict[str, Any]) -> None:
        for rule, u in self._uplink.items():
            saved = state.get(rule)
            u.alarm.restore(saved["alarm"] if saved else None)
            u.last_us, u.reason = (saved["last_us"], saved["reason"]) if saved else (None, "")
        entry = state.get(DATA_LOSS)
        if entry is None:
            self.data_loss_alarm.restore(None)
            self._last_loss_us, self._reason = None, ""
        elif "alarm" in entry:
            self.data_loss_alarm.restore(entry["alarm"])
            self._last_loss_us, self._reason = entry["last_us"], entry["reason"]
        else:  # saved before the lifecycle: {since_us, last_us, reason} of an active, unacknowledged alarm
            self.data_loss_alarm.restore({"level": "DATA_LOSS", "since": entry["since_us"],
                                          "changed": entry["since_us"], "acked": False})
            self._last_loss_us, self._reason = entry["last_us"], entry["reason"]

    def alarms(self) -> list[Alarm]:
        """The lifecycle objects, for ``blackbox alarms`` (listing and operator actions)."""
        return [self.data_loss_alarm, *(u.alarm for u in self._uplink.values())]

    def rules(self) -> list[str]:
        """Rule ids of the active alarms."""
        return [*([DATA_LOSS] if self.data_loss_alarm.level is not None else []),
                *(rule for rule, u in self._uplink.items() if u.alarm.level is not None)]

    def active(self) -> list[tuple[str, str]]:
        """(subject, reason) of each active alarm."""
        return [*([("buffer", self._reason)] if self.data_loss_alarm.level is not None else []),
                *(("uplink", u.reason) for u in self._uplink.values() if u.alarm.level is not None)]

    def data_loss(self, reason: str, ts_us: int, detail: dict[str, Any]) -> list[EventDraft]:
        """Note a loss; the ``alarm.raised`` event if the alarm was not already active (nor out of service)."""
        self._last_loss_us = ts_us
        alarm = self.data_loss_alarm
        if alarm.level is not None or alarm.out_of_service:
            return []
        self._reason = reason
        events, _ = alarm.condition(Verdict("DATA_LOSS", detail={"reason": reason, **detail}), ts_us)
        return events

    def uplink(self, rule: str, reason: str, ts_us: int) -> list[EventDraft]:
        """Note a refused receipt or an inconsistent store log (``rule``); ``alarm.raised`` if not already active."""
        u = self._uplink[rule]
        u.last_us = ts_us
        if u.alarm.level is not None or u.alarm.out_of_service:
            return []
        u.reason = reason
        events, _ = u.alarm.condition(Verdict("RECEIPT", detail={"reason": reason}), ts_us)
        return events

    def tick(self, ts_us: int) -> list[EventDraft]:
        """Time-driven transitions: ``alarm.cleared`` once quiet long enough, a shelving that expires."""
        alarm = self.data_loss_alarm
        out = alarm.tick(ts_us)
        last = self._last_loss_us
        if alarm.level is not None and last is not None and ts_us - last >= QUIET_BEFORE_CLEAR_US:
            events, _ = alarm.condition(Verdict(None, detail={"reason": f"no further loss since {self._reason}"}),
                                        ts_us)
            out += events
        for u in self._uplink.values():
            out += u.alarm.tick(ts_us)
            if u.alarm.level is not None and u.last_us is not None and ts_us - u.last_us >= QUIET_BEFORE_CLEAR_US:
                events, _ = u.alarm.condition(Verdict(None, detail={"reason": f"no further problem since {u.reason}"}),
                                              ts_us)
                out += events
        return out


@dataclass
class _Uplink:
    alarm: Alarm
    last_us: int | None = None
    reason: str = ""
