"""Operator entries on the control socket: batch start/phase/end, materials consumed, QC results.

Each entry is recorded before the command answers: the operator sees either the sequence number
of the event that holds it, or why it was refused (nothing is recorded then). Who entered it is
the control socket's caller (:attr:`blackbox.agent.control.Caller.name`: the name given, with
the OS account the kernel vouches for). Material and QC entries belong to the active batch, or
to the batch named with them (a QC result that arrives after the batch ended).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from blackbox.agent.context import ContextError, ContextTracker
from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.agent.recorder import Recorder
from blackbox.buffer import BufferError, Committed
from blackbox.model import Context, EventDraft

Builder = Callable[[ContextTracker], list[EventDraft]]


def operator_handlers(recorder: Recorder) -> dict[str, Handler]:
    """The control commands of this module, by name."""

    async def run(build: Builder) -> dict[str, Any]:
        try:
            committed = await recorder.commit(change=build)
        except ContextError as exc:
            raise ControlError(str(exc)) from None
        except BufferError as exc:
            raise ControlError(f"not recorded, the buffer refused it: {exc}") from None
        return _answer(committed, recorder.tracker.context)

    async def batch_start(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        a = _Args(args, {"batch", "product", "recipe", "recipe_version", "phase"})
        batch, product = a.text("batch"), a.text("product")
        recipe, version, phase = a.text("recipe", False), a.text("recipe_version", False), a.text("phase", False)
        return await run(lambda t: t.start_batch(batch, product, recipe, version, phase, caller.name))

    async def batch_phase(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        phase = _Args(args, {"phase"}).text("phase")
        return await run(lambda t: t.set_phase(phase, caller.name))

    async def batch_end(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _Args(args, set())
        return await run(lambda t: t.end_batch(caller.name))

    async def material_add(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        a = _Args(args, {"material", "lot", "target", "actual", "eng_unit", "scale", "tolerance", "tolerance_pct",
                         "verifier", "batch"})
        target, actual = a.number("target"), a.number("actual")
        tolerance, tol_pct = a.number("tolerance", False), a.number("tolerance_pct", False)
        if tolerance is not None and tol_pct is not None:
            raise ControlError("give the tolerance either absolute (tolerance) or in % of target, not both")
        if target <= 0 or actual < 0 or (tolerance or 0) < 0 or (tol_pct or 0) < 0:
            raise ControlError("target must be positive; actual and the tolerance must not be negative")
        if tolerance is not None:
            tol_pct = abs(tolerance / target) * 100
        elif tol_pct is not None:
            tolerance = target * tol_pct / 100
        material = a.text("material")
        data = {"material": material, "lot": a.text("lot"), "target": target, "actual": actual,
                "eng_unit": a.text("eng_unit", False) or "kg", "scale": a.text("scale"), "tolerance": tolerance,
                "tolerance_pct": tol_pct,
                "in_tolerance": None if tolerance is None else abs(actual - target) <= tolerance + 1e-9,
                "operator": caller.name, "verifier": a.text("verifier", False)}
        batch = a.text("batch", False)
        return await run(lambda t: [EventDraft("material.consumed", material, data, context=_belongs_to(t, batch))])

    async def qc_add(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        a = _Args(args, {"test", "value", "eng_unit", "spec_low", "spec_high", "pass", "sample", "batch"})
        test, sample = a.text("test"), a.text("sample")
        low, high = a.number("spec_low", False), a.number("spec_high", False)
        if low is not None and high is not None and low > high:
            raise ControlError(f"spec_low {low} is above spec_high {high}")
        value: float | str = a.number("value") if isinstance(args.get("value"), int | float) else a.text("value")
        verdict = a.flag("pass")
        if low is not None or high is not None:
            if not isinstance(value, float):
                raise ControlError(f"value {value!r} is not a number, so it cannot be judged against a specification")
            judged = (low is None or value >= low) and (high is None or value <= high)
            if verdict is not None and verdict != judged:
                raise ControlError(f"value {value} is {'within' if judged else 'outside'} the specification "
                                   f"{low}..{high}: the given pass/fail contradicts it")
            verdict = judged
        elif verdict is None:
            raise ControlError("give a specification (spec_low and/or spec_high) or the verdict (pass: true/false)")
        data = {"test": test, "value": value, "eng_unit": a.text("eng_unit", False) or "", "spec_low": low,
                "spec_high": high, "pass": verdict, "sample": sample, "operator": caller.name}
        batch = a.text("batch", False)
        return await run(lambda t: [EventDraft("qc.result", test, data, context=_belongs_to(t, batch))])

    return {"batch.start": batch_start, "batch.phase": batch_phase, "batch.end": batch_end,
            "material.add": material_add, "qc.add": qc_add}


def _belongs_to(tracker: ContextTracker, batch: str | None) -> Context | None:
    """The context an entry is attributed to: the active batch, or the one named (``None``: active)."""
    active = tracker.context
    if batch is None:
        if active.batch is None:
            raise ContextError("no batch is active: name the batch the entry belongs to (--batch)")
        return None
    return None if batch == active.batch else Context(batch=batch)


def _answer(committed: Committed, context: Context) -> dict[str, Any]:
    return {"seqs": [e.seq for e in committed.events], "events": [e.type for e in committed.events],
            "batch": context.batch, "phase": context.phase}


class _Args:
    """Checks a command's arguments; every mistake is a :class:`ControlError` naming the field."""

    def __init__(self, args: dict[str, Any], known: set[str]) -> None:
        unknown = sorted(set(args) - known)
        if unknown:
            raise ControlError(f"unknown argument(s) {', '.join(unknown)} (known: {', '.join(sorted(known)) or '-'})")
        self._args = args

    def text(self, key: str, required: bool = True) -> Any:
        value = self._args.get(key)
        if value is None:
            if required:
                raise ControlError(f"{key} is required")
            return None
        if not isinstance(value, str) or not value.strip() or not value.isprintable() or len(value) > 200:
            raise ControlError(f"{key} must be a non-empty printable text of at most 200 characters")
        return value.strip()

    def number(self, key: str, required: bool = True) -> Any:
        value = self._args.get(key)
        if value is None:
            if required:
                raise ControlError(f"{key} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ControlError(f"{key} must be a finite number, not {value!r}")
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self._args.get(key)
        if value is not None and not isinstance(value, bool):
            raise ControlError(f"{key} must be true or false")
        return value
