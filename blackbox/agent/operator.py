"""Operator entries on the control socket: batch start/phase/end, materials consumed, QC results.

Each entry is recorded before the command answers: the operator sees either the sequence number
of the event that holds it, or why it was refused (nothing is recorded then). Who entered it is
the control socket's caller (:attr:`blackbox.agent.control.Caller.name`: the name given, with
the OS account the kernel vouches for). Material and QC entries belong to the active batch, or
to the batch named with them (a QC result that arrives after the batch ended).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from blackbox.agent.accounts_watch import record_outside_change
from blackbox.agent.batch_record import RecordError
from blackbox.agent.context import ContextError, ContextTracker
from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.agent.entry_args import Args as _Args
from blackbox.agent.esign import Accounts, who
from blackbox.agent.record_commands import record_handlers
from blackbox.agent.recorder import Recorder
from blackbox.buffer import BufferError, Committed
from blackbox.model import Context, EventDraft

Builder = Callable[[ContextTracker], list[EventDraft]]


def operator_handlers(recorder: Recorder, accounts: Accounts | None = None) -> dict[str, Handler]:
    """The control commands of this module, by name.

    With ``accounts`` holding at least one account, every entry must carry a ``signature``
    (``{"user", "password"}``) of a user with the entry's role; see :mod:`blackbox.agent.esign`.
    """

    if accounts is not None:
        recorder.record_keeper.signing = lambda: accounts.enabled

    async def sign(args: dict[str, Any], role: str | tuple[str, ...], meaning: str,
                   key: str = "signature") -> dict[str, Any] | None:
        """The signature record of ``args[key]`` (removed from ``args``); None on a gateway without accounts."""
        credentials = args.pop(key, None)
        if accounts is None:
            if credentials is not None:
                raise ControlError("this gateway has no operator accounts: entries cannot be signed")
            return None
        async with accounts.lock:  # also an emptied file: entries would go unsigned, so it is recorded first
            await record_outside_change(accounts, recorder.record_keeper.chained_accounts, run,
                                        "found before an entry")
            if not accounts.enabled:
                if credentials is not None:
                    raise ControlError("this gateway has no operator accounts: entries cannot be signed")
                return None
            return await asyncio.to_thread(accounts.sign, credentials, role, meaning)

    def with_signatures(data: dict[str, Any], *sigs: dict[str, Any] | None) -> dict[str, Any]:
        signed = [s for s in sigs if s is not None]
        return {**data, "signatures": signed} if signed else data

    async def run(build: Builder) -> dict[str, Any]:
        try:
            committed = await recorder.commit(change=build)
        except (ContextError, RecordError) as exc:
            raise ControlError(str(exc)) from None
        except BufferError as exc:
            raise ControlError(f"not recorded, the buffer refused it: {exc}") from None
        return _answer(committed, recorder.tracker.context)

    def signing(build: Builder, sig: dict[str, Any] | None) -> Builder:
        """``build``, with ``sig`` added to the events an operator's command makes."""
        if sig is None:
            return build
        return lambda t: [EventDraft(d.type, d.subject, with_signatures(d.data, sig), d.ts_us, d.context)
                          for d in build(t)]

    async def batch_start(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await sign(args, "operator", "performed")
        a = _Args(args, {"batch", "product", "recipe", "recipe_version", "phase"})
        batch, product = a.text("batch"), a.text("product")
        recipe, version, phase = a.text("recipe", False), a.text("recipe_version", False), a.text("phase", False)
        by = who(caller, sig)
        return await run(signing(lambda t: t.start_batch(batch, product, recipe, version, phase, by), sig))

    async def batch_phase(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await sign(args, "operator", "performed")
        phase = _Args(args, {"phase"}).text("phase")
        return await run(signing(lambda t: t.set_phase(phase, who(caller, sig)), sig))

    async def batch_end(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await sign(args, "operator", "performed")
        _Args(args, set())
        return await run(signing(lambda t: t.end_batch(who(caller, sig)), sig))

    async def material_add(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await sign(args, "operator", "performed")
        vsig = await sign(args, "verifier", "verified", "verifier_signature") if "verifier_signature" in args else None
        if sig is not None and vsig is not None and vsig["user"] == sig["user"]:
            raise ControlError(f"{sig['user']} cannot verify their own weighing: a second person must verify it")
        if sig is not None and args.get("verifier") is not None:
            raise ControlError("on a gateway with operator accounts the verifier signs (verifier_signature), "
                               "a typed name does not count")
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
                "operator": who(caller, sig), "verifier": a.text("verifier", False) or (vsig and vsig["name"])}
        if sig is not None:
            data["performed_by"] = sig
        if vsig is not None:
            data["verified_by"] = vsig
        data = with_signatures(data, sig, vsig)
        batch = a.text("batch", False)
        return await run(lambda t: [EventDraft("material.consumed", material, data, context=_belongs_to(t, batch))])

    async def qc_add(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await sign(args, "qc_analyst", "performed")
        a = _Args(args, {"test", "value", "eng_unit", "spec_low", "spec_high", "pass", "sample", "batch"})
        test, sample = a.text("test"), a.text("sample")
        low, high = a.number("spec_low", False), a.number("spec_high", False)
        named = a.text("batch", False)
        product = (recorder.record_keeper.product_of(named) if named is not None
                   and named != recorder.tracker.context.batch else recorder.tracker.context.product)
        known = recorder.record_keeper.qc_spec(product, test)
        basis: dict[str, Any] | None = None
        if known is not None and (known[2].get("approved") or (low is None and high is None)):
            if (low is not None or high is not None) and (low, high) != known[:2]:
                raise ControlError(f"the approved specification {known[2].get('id')} v{known[2].get('version')} "
                                   f"says {test} {known[0]}..{known[1]}: the specification entered contradicts it")
            low, high, basis = known
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
                "spec_high": high, "pass": verdict, "sample": sample, "operator": who(caller, sig)}
        if basis is not None:
            data["spec_basis"] = basis
        data = with_signatures(data, sig)
        batch = a.text("batch", False)
        return await run(lambda t: [EventDraft("qc.result", test, data, context=_belongs_to(t, batch))])

    handlers: dict[str, Handler] = {"batch.start": batch_start, "batch.phase": batch_phase,
                                    "batch.end": batch_end, "material.add": material_add, "qc.add": qc_add}
    handlers.update(record_handlers(recorder, accounts, sign, run))
    return handlers


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
            "ids": [e.data.get("weighing") or e.data.get("id") for e in committed.events],
            "batch": context.batch, "phase": context.phase}
