"""The alarm commands of the agent's control socket (``blackbox alarms …``).

The agent routes them to the rule engine: the rules know nothing of the control socket.

Every action is recorded with who asked (the control socket's caller: the claimed name qualified
by the OS account) and when. With a ``commit`` function (the recorder's), an action answers only
once its events are committed to the buffer; if the commit fails, the alarms are put back as they
were and the caller gets the error. An action on several alarms is all or nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.model import EventDraft, Sample, now_us
from blackbox.rules.base import US
from blackbox.rules.lifecycle import Alarm, AlarmError, AlarmState

if TYPE_CHECKING:
    from blackbox.rules.engine import RuleEngine

Commit = Callable[[Sequence[Sample], Sequence[EventDraft]], Awaitable[object]]


def _names(args: dict[str, Any]) -> list[str]:
    names = args.get("alarms") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ControlError("alarms must be a list of alarm ids or tags")
    return names


def _number(args: dict[str, Any], key: str, default: float | None = None) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ControlError(f"{key} must be a positive number, not {value!r}")
    return float(value)


def _reason(args: dict[str, Any]) -> str:
    reason = args.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ControlError("a reason is required (it goes into the record)")
    return reason.strip()


def handlers(engine: RuleEngine, commit: Commit | None = None) -> dict[str, Handler]:
    """The handlers, by command name. ``commit`` (the recorder's) makes an action durable before it is answered."""

    def select(args: dict[str, Any], *, awaiting_ack: bool = False) -> list[Alarm]:
        names = _names(args)
        if args.get("all"):
            if names:
                raise ControlError("give alarm ids or all, not both")
            if not awaiting_ack:
                raise ControlError("all applies to acknowledgement only")
            return [a for a in engine.alarms() if a.state in (AlarmState.ACTIVE_UNACKNOWLEDGED,
                                                               AlarmState.CLEARED_UNACKNOWLEDGED)]
        if not names:
            raise ControlError("name at least one alarm (an alarm id, or a tag for all of its alarms)")
        try:
            return engine.select(names)
        except AlarmError as exc:
            raise ControlError(str(exc)) from None

    async def act(action: str, alarms: list[Alarm], **kwargs: Any) -> dict[str, Any]:
        saved = [(a, a.state_dict(now_us())) for a in alarms]
        try:
            events = engine.act(action, alarms, ts_us=now_us(), **kwargs)
        except AlarmError as exc:
            raise ControlError(str(exc)) from None
        if commit is not None and events:
            try:
                await commit([], events)
            except BaseException:
                engine.take_back(saved, events)  # not in the record: as if it never happened
                raise
        else:
            engine.post(events)
        return {"done": [a.describe() for a in alarms]}

    async def list_alarms(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        everything = bool(args.get("all"))
        flood = engine.flood
        return {"alarms": [a.describe() for a in engine.alarms()
                           if everything or a.state is not AlarmState.NORMAL or a.chatter.active],
                "flood": {"active": flood.active, "since_us": flood.since_us}, "now_us": now_us()}

    async def ack(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return await act("acknowledge", select(args, awaiting_ack=True), user=caller.name)

    async def shelve(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        alarms = select(args)
        duration = _number(args, "duration_s")
        longest = engine.settings.max_shelve
        if duration > longest:
            raise ControlError(f"shelving is limited to {longest:g} s (alarms.max_shelve), not {duration:g} s")
        now = now_us()
        return await act("shelve", alarms, user=caller.name, until_us=now + int(duration * US),
                         reason=_reason(args))

    async def unshelve(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return await act("unshelve", select(args), user=caller.name)

    async def out_of_service(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return await act("remove_from_service", select(args), user=caller.name, reason=_reason(args))

    async def in_service(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return await act("return_to_service", select(args), user=caller.name)

    async def top(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        hours = _number(args, "hours", 24.0)
        n = int(_number(args, "n", 10))
        by_id = {a.id: a for a in engine.alarms()}
        rows = []
        for alarm_id, count in engine.counts.top(now_us(), hours, n):
            a = by_id.get(alarm_id)
            rows.append({"alarm": alarm_id, "count": count, "subject": a.subject if a else None,
                         "priority": a.rule.priority if a else None, "chattering": bool(a and a.chatter.active)})
        return {"hours": hours, "top": rows}

    return {"alarms.list": list_alarms, "alarms.ack": ack, "alarms.shelve": shelve, "alarms.unshelve": unshelve,
            "alarms.out_of_service": out_of_service, "alarms.in_service": in_service, "alarms.top": top}
