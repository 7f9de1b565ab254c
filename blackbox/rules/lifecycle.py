"""The alarm lifecycle after ISA-18.2: one :class:`Alarm` per rule, every transition an event.

States (``state`` in every event):

=========================  ===========================================================================
normal                     condition normal, nothing to acknowledge
active_unacknowledged      condition active, not yet acknowledged (annunciated)
active_acknowledged        condition active, acknowledged
cleared_unacknowledged     condition back to normal before anyone acknowledged it
shelved                    hidden by an operator until an expiry (``shelve``/``unshelve``)
suppressed                 hidden by design while the plant state makes it meaningless (a CIP phase)
out_of_service             removed from service by an engineer; its rule is not evaluated
=========================  ===========================================================================

Events: ``alarm.raised`` (a start, or a change of level while active), ``alarm.cleared``,
``alarm.acknowledged``, ``alarm.shelved``, ``alarm.unshelved``, ``alarm.suppressed``,
``alarm.unsuppressed``, ``alarm.out_of_service``, ``alarm.in_service``, ``alarm.chattering``. Each
carries who (``user``: the operator, or ``None`` for the system) and when (the event time).

While shelved or suppressed the rule keeps judging and its condition changes are still recorded
(the record is complete), marked ``annunciated: false``; when the alarm comes back and its condition
is still active, it is annunciated again and needs a fresh acknowledgement. A start or an escalation
to a more severe level (H to HH) needs acknowledging; a return to a less severe level does not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from blackbox.config import AlarmsConfig, RuleBase
from blackbox.model import EventDraft
from blackbox.rules.base import Verdict
from blackbox.rules.flood import Chatter

SEVERITY = {"HH": 2, "LL": 2}
"""Levels more severe than the others (which count 1)."""


class AlarmState(StrEnum):
    NORMAL = "normal"
    ACTIVE_UNACKNOWLEDGED = "active_unacknowledged"
    ACTIVE_ACKNOWLEDGED = "active_acknowledged"
    CLEARED_UNACKNOWLEDGED = "cleared_unacknowledged"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


class AlarmError(Exception):
    """An operator action that the alarm's state does not allow; the message says why."""


class Alarm:
    def __init__(self, rule: RuleBase, settings: AlarmsConfig, eng_unit: str = "") -> None:
        self.rule = rule
        self.id = rule.alarm_id()
        self.kind: str = type(rule).model_fields["type"].default
        self.tag: str | None = getattr(rule, "tag", None)
        self.subject = self.tag or rule.subject()
        self.eng_unit = eng_unit
        self.level: str | None = None
        self.value: float | None = None
        self.limit: float | None = None
        self.since_us: int | None = None
        self.changed_us: int | None = None
        self.acked = True
        self.acked_by: str | None = None
        self.shelved_until_us: int | None = None
        self.shelved_by: str | None = None
        self.note: str | None = None
        """The reason given for shelving or for taking it out of service."""
        self.suppressed = False
        self.out_of_service = False
        self.chatter = Chatter(settings)

    @property
    def state(self) -> AlarmState:
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved_until_us is not None:
            return AlarmState.SHELVED
        if self.suppressed:
            return AlarmState.SUPPRESSED
        if self.level is not None:
            return AlarmState.ACTIVE_ACKNOWLEDGED if self.acked else AlarmState.ACTIVE_UNACKNOWLEDGED
        return AlarmState.NORMAL if self.acked else AlarmState.CLEARED_UNACKNOWLEDGED

    @property
    def annunciated(self) -> bool:
        return not (self.out_of_service or self.shelved_until_us is not None or self.suppressed)

    def _event(self, transition: str, ts_us: int, before: AlarmState, user: str | None = None,
               **extra: Any) -> EventDraft:
        self.changed_us = ts_us
        data: dict[str, Any] = {
            "alarm": self.id, "rule": self.id, "kind": self.kind, "tag": self.tag, "level": self.level,
            "value": self.value, "limit": self.limit, "priority": self.rule.priority, "eng_unit": self.eng_unit,
            "state": self.state.value, "previous_state": before.value, "annunciated": self.annunciated,
            "user": user, **extra}
        return EventDraft(f"alarm.{transition}", self.subject, data, ts_us)

    # -- the condition, as the rule judges it ------------------------------------------------

    def condition(self, verdict: Verdict, ts_us: int) -> tuple[list[EventDraft], bool]:
        """Apply a rule's verdict; return the events and whether an annunciated alarm started."""
        before = self.state
        level = verdict.level
        if level is None:
            if self.level is None:
                return [], False
            if verdict.value is not None:
                self.value = verdict.value  # the value it cleared at (the limit stays the one it cleared)
            if self.chatter.active:
                self.chatter.held_since_us = ts_us  # chattering: the clear waits for chatter_release
                return [], False
            return [self._clear(ts_us, before, verdict.detail)], False
        if self.chatter.held_since_us is not None:
            self.chatter.held_since_us = None  # back in alarm before the held clear was reported
            if SEVERITY.get(level, 1) <= SEVERITY.get(self.level or "", 1):
                return [], False
        elif level == self.level:
            return [], False  # the rule re-judged after a restart and agrees with the record
        previous = self.level
        self.level, self.value, self.limit = level, verdict.value, verdict.limit
        if previous is None:
            self.since_us, self.acked = ts_us, False
            events = [self._event("raised", ts_us, before, previous=None, **verdict.detail)]
            if self.chatter.started(ts_us):
                events.append(self._event("chattering", ts_us, self.state, starts=self.chatter.count,
                                          window_s=self.chatter.window_s))
            return events, self.annunciated
        if SEVERITY.get(level, 1) > SEVERITY.get(previous, 1):
            self.acked = False
        return [self._event("raised", ts_us, before, previous=previous, **verdict.detail)], False

    def _clear(self, ts_us: int, before: AlarmState, detail: dict[str, Any], **extra: Any) -> EventDraft:
        event = self._event("cleared", ts_us, before, **detail, **extra)
        self.level = self.limit = None
        self.since_us = None
        event.data["state"] = self.state.value
        return event

    def tick(self, ts_us: int) -> list[EventDraft]:
        """Time-driven transitions: a shelving that expires, a chattering clear that is due."""
        events: list[EventDraft] = []
        if self.shelved_until_us is not None and ts_us >= self.shelved_until_us:
            events.append(self.unshelve(None, ts_us, "shelving expired"))
        if self.chatter.due(ts_us):
            held = self.chatter.held_since_us
            if held is None:
                raise RuntimeError("internal error: expected held is not None")
            self.chatter.end()
            events.append(self._clear(ts_us, self.state, {}, chattering=True,
                                      normal_since_us=held))
        return events

    def drop_condition(self, ts_us: int, reason: str) -> list[EventDraft]:
        """The rule stopped judging (out of force): an active condition clears now, held or not."""
        self.chatter.end()
        if self.level is None:
            return []
        return [self._clear(ts_us, self.state, {"reason": reason})]

    # -- operator actions and design suppression ---------------------------------------------

    def check(self, action: str) -> None:
        """Raise :class:`AlarmError` if the operator ``action`` (a method name) is not allowed now."""
        state = self.state
        if action == "acknowledge" and state not in (AlarmState.ACTIVE_UNACKNOWLEDGED,
                                                     AlarmState.CLEARED_UNACKNOWLEDGED):
            raise AlarmError(f"alarm {self.id} is {state.value}: nothing to acknowledge")
        if action in ("shelve", "remove_from_service") and self.out_of_service:
            raise AlarmError(f"alarm {self.id} is out of service")
        if action == "unshelve" and self.shelved_until_us is None:
            raise AlarmError(f"alarm {self.id} is not shelved")
        if action == "return_to_service" and not self.out_of_service:
            raise AlarmError(f"alarm {self.id} is in service")

    def acknowledge(self, user: str, ts_us: int) -> EventDraft:
        self.check("acknowledge")
        before = self.state
        self.acked, self.acked_by = True, user
        return self._event("acknowledged", ts_us, before, user)

    def shelve(self, user: str, ts_us: int, until_us: int, reason: str) -> EventDraft:
        self.check("shelve")
        before = self.state
        self.shelved_until_us, self.shelved_by, self.note = until_us, user, reason
        return self._event("shelved", ts_us, before, user, until_us=until_us, reason=reason)

    def unshelve(self, user: str | None, ts_us: int, reason: str | None = None) -> EventDraft:
        self.check("unshelve")
        before = self.state
        self.shelved_until_us = self.shelved_by = self.note = None
        self._reannunciate()
        return self._event("unshelved", ts_us, before, user, reason=reason)

    def _reannunciate(self) -> None:
        """Back from hiding: an alarm still active is annunciated again and needs acknowledging."""
        if self.annunciated:
            self.acked = self.level is None

    def set_suppressed(self, suppressed: bool, ts_us: int) -> EventDraft | None:
        if suppressed == self.suppressed:
            return None
        before = self.state
        self.suppressed = suppressed
        if not suppressed:
            self._reannunciate()
        return self._event("suppressed" if suppressed else "unsuppressed", ts_us, before)

    def remove_from_service(self, user: str, ts_us: int, reason: str) -> EventDraft:
        """Out of service: the rule stops judging; an active condition is dropped with it."""
        self.check("remove_from_service")
        event = self._event("out_of_service", ts_us, self.state, user, reason=reason)
        self.out_of_service, self.note = True, reason
        self.shelved_until_us = self.shelved_by = None
        self.level = self.value = self.limit = self.since_us = None
        self.acked = True
        self.chatter.end()
        event.data["state"], event.data["annunciated"] = self.state.value, False
        return event

    def return_to_service(self, user: str, ts_us: int) -> EventDraft:
        self.check("return_to_service")
        before = self.state
        self.out_of_service, self.note = False, None
        return self._event("in_service", ts_us, before, user)

    # -- listing and persistence -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"alarm": self.id, "kind": self.kind, "subject": self.subject, "tag": self.tag, "level": self.level,
                "state": self.state.value, "priority": self.rule.priority, "value": self.value, "limit": self.limit,
                "eng_unit": self.eng_unit, "since_us": self.since_us, "changed_us": self.changed_us,
                "acked_by": self.acked_by, "shelved_until_us": self.shelved_until_us,
                "shelved_by": self.shelved_by, "note": self.note, "chattering": self.chatter.active}

    def state_dict(self, now_us: int) -> dict[str, Any] | None:
        """What survives a restart, without empty fields; ``None`` for an alarm at rest (most of them)."""
        normal = (self.level is None and self.acked and self.shelved_until_us is None and not self.suppressed
                  and not self.out_of_service)  # AlarmState.NORMAL, without the property's cost
        if normal and not self.chatter.active and self.chatter.last_us() is None:
            return None  # at rest and never started: the common case, first and fast
        chatter = self.chatter.state(now_us)
        if normal and chatter is None:
            return None
        # saved with every commit that changed the alarm: field by field, which is several times
        # cheaper than filtering a table of them
        state: dict[str, Any] = {}
        if self.level is not None:
            state["level"] = self.level
        if self.value is not None:
            state["value"] = self.value
        if self.limit is not None:
            state["limit"] = self.limit
        if self.since_us is not None:
            state["since"] = self.since_us
        if self.changed_us is not None:
            state["changed"] = self.changed_us
        if self.acked_by is not None:
            state["acked_by"] = self.acked_by
        if self.shelved_until_us is not None:
            state["shelved_until"] = self.shelved_until_us
        if self.shelved_by is not None:
            state["shelved_by"] = self.shelved_by
        if self.note is not None:
            state["note"] = self.note
        if chatter is not None:
            state["chatter"] = chatter
        if not self.acked:  # the flags only when not at their defaults, in this order
            state["acked"] = False
        if self.suppressed:
            state["suppressed"] = True
        if self.out_of_service:
            state["oos"] = True
        return state

    def restore(self, s: dict[str, Any] | None) -> None:
        """Take back :meth:`state_dict` (``None``: at rest)."""
        s = s or {}
        self.level, self.value, self.limit = s.get("level"), s.get("value"), s.get("limit")
        self.since_us, self.changed_us, self.acked_by = s.get("since"), s.get("changed"), s.get("acked_by")
        self.shelved_until_us, self.shelved_by, self.note = s.get("shelved_until"), s.get("shelved_by"), s.get("note")
        self.acked, self.suppressed, self.out_of_service = s.get("acked", True), s.get("suppressed", False), s.get(
            "oos", False)
        if s.get("chatter") is None:
            self.chatter.end()
        else:
            self.chatter.restore(s["chatter"])
