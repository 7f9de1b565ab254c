"""Control commands of the batch record: operator accounts, weighing verification, deviations,
release, cleaning, material and finished-goods lots.

Every entry is signed (see :mod:`blackbox.agent.esign`) and recorded before the command answers;
a refused entry (wrong password, locked account, missing role, a rule of the record broken)
records nothing. Account administration is for the gateway's own account or root only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from blackbox.agent.accounts_watch import record_outside_change
from blackbox.agent.batch_record import LOT_STATUSES, RecordError
from blackbox.agent.context import ContextTracker
from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.agent.entry_args import Args
from blackbox.agent.esign import Accounts, who
from blackbox.agent.recorder import Recorder
from blackbox.model import Context, EventDraft

Sign = Callable[..., Awaitable[dict[str, Any] | None]]
Run = Callable[[Callable[[ContextTracker], list[EventDraft]]], Awaitable[dict[str, Any]]]

NO_BATCH = Context()
"""Records about equipment and lots, not about a batch."""


def record_handlers(recorder: Recorder, accounts: Accounts | None, sign: Sign, run: Run) -> dict[str, Handler]:
    keeper = recorder.record_keeper

    async def required(args: dict[str, Any], role: str | tuple[str, ...], meaning: str,
                       key: str = "signature") -> dict[str, Any]:
        sig = await sign(args, role, meaning, key)
        if sig is None:
            raise ControlError("this entry needs an electronic signature: add operator accounts to the gateway "
                               "(blackbox operator add)")
        return sig

    def in_batch(batch: str) -> Context | None:
        return None if batch == recorder.tracker.context.batch else Context(batch=batch)

    async def material_verify(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "verifier", "verified")
        wid = Args(args, {"weighing"}).text("weighing")
        w = _checked(keeper.weighing, wid)
        if w.get("performer") == sig["user"]:
            raise ControlError(f"{sig['user']} weighed {wid} and cannot verify it: a second person must")
        data = {"weighing": wid, "batch": w["batch"], "material": w["material"], "lot": w["lot"],
                "verified_by": sig, "signatures": [sig], "operator": who(caller, sig)}
        return await run(lambda t: [EventDraft("material.verified", w["material"], data,
                                               context=in_batch(w["batch"]))])

    async def deviation_close(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "qa_releaser", "reviewed")
        a = Args(args, {"id", "reason", "action"})
        dev, reason, action = a.text("id"), a.text("reason"), a.text("action")
        batch = _checked(keeper.deviation_batch, dev)
        data = {"id": dev, "batch": batch, "reason": reason, "action": action, "closed_by": sig,
                "signatures": [sig], "operator": who(caller, sig)}
        return await run(lambda t: [EventDraft("deviation.closed", dev, data, context=in_batch(batch))])

    async def batch_release(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "qa_releaser", "approved")
        batch = Args(args, {"batch"}).text("batch")
        info = _checked(keeper.batch, batch)
        blockers = _checked(keeper.release_blockers, batch)
        if blockers:
            raise ControlError(f"batch {batch} cannot be released: " + "; ".join(blockers))
        req = keeper.qc_requirements(info.get("product"))
        data = {"batch": batch, "product": info.get("product"), "qc": info["qc"], "released_by": sig,
                "qc_basis": req.basis, "required": [t.test for t in req.tests],
                "deviations": sorted(info["deviations"]),
                "signatures": [sig], "operator": who(caller, sig)}
        return await run(lambda t: [EventDraft("batch.released", batch, data, context=in_batch(batch))])

    async def cleaning_record(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "operator", "performed")
        vsig = await sign(args, "verifier", "verified", "verifier_signature") if "verifier_signature" in args \
            else None
        if vsig is not None and vsig["user"] == sig["user"]:
            raise ControlError(f"{sig['user']} cleaned the unit and cannot verify the cleaning: a second person must")
        a = Args(args, {"unit", "method", "agent", "start_us", "end_us", "verification"})
        unit, start, end = a.text("unit"), int(a.number("start_us")), int(a.number("end_us"))
        if end < start:
            raise ControlError("the cleaning cannot end before it started")
        hours = keeper.cfg.cleaning_valid_hours.get(unit, keeper.cfg.cleaning_valid_hours_default)
        cid = keeper.next_id("CLN")
        data = {"id": cid, "unit": unit, "method": a.text("method"), "agent": a.text("agent"), "start_us": start,
                "end_us": end, "verification": a.text("verification", False), "valid_hours": hours,
                "valid_until_us": end + int(hours * 3_600_000_000), "performed_by": sig, "verified_by": vsig,
                "signatures": [s for s in (sig, vsig) if s], "operator": who(caller, sig)}
        return await run(lambda t: [EventDraft("cleaning.recorded", unit, data, context=NO_BATCH)])

    async def lot_register(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "operator", "performed")
        a = Args(args, {"lot", "material", "sublot", "supplier", "supplier_lot", "coa", "quantity", "unit",
                        "status", "kind"})
        status = a.text("status", False) or "released"
        if status not in LOT_STATUSES:
            raise ControlError(f"status must be one of {', '.join(LOT_STATUSES)}")
        kind = a.text("kind", False) or "raw"
        if kind not in ("raw", "packaging"):
            raise ControlError("kind must be raw or packaging")
        lot = a.text("lot")
        data = {"lot": lot, "material": a.text("material"), "sublot": a.text("sublot", False),
                "supplier": a.text("supplier", False), "supplier_lot": a.text("supplier_lot", False),
                "coa": a.text("coa", False), "quantity": a.number("quantity", False), "unit": a.text("unit", False),
                "status": status, "kind": kind, "signatures": [sig], "operator": who(caller, sig)}
        received = [EventDraft("lot.registered", lot, data, context=NO_BATCH)]
        if data["supplier_lot"]:  # the store's forward genealogy finds the lot by its supplier's lot (indexed)
            received.append(EventDraft("lot.supplied", data["supplier_lot"], {
                "supplier": data["supplier"], "supplier_lot": data["supplier_lot"], "lot": lot,
                "material": data["material"], "quantity": data["quantity"], "unit": data["unit"]}, context=NO_BATCH))
        return await run(lambda t: received)

    async def lot_produce(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        args = dict(args)
        sig = await required(args, "operator", "performed")
        a = Args(args, {"lot", "batch", "quantity", "unit", "packaging"})
        lot, batch, quantity = a.text("lot"), a.text("batch"), a.number("quantity")
        if quantity <= 0:
            raise ControlError("quantity must be positive")
        packaging = args.get("packaging") or []
        if not isinstance(packaging, list) or not all(isinstance(p, dict) for p in packaging):
            raise ControlError("packaging must be a list of {material, lot, quantity}")
        packs = []
        for p in packaging:
            pa = Args(p, {"material", "lot", "quantity", "unit"})
            packs.append({"material": pa.text("material"), "lot": pa.text("lot"),
                          "quantity": pa.number("quantity", False), "unit": pa.text("unit", False)})
        product = keeper.product_of(batch)
        data = {"lot": lot, "batch": batch, "product": product, "quantity": quantity,
                "unit": a.text("unit", False) or "pcs", "packaging": packs, "signatures": [sig],
                "operator": who(caller, sig)}
        filled = [EventDraft("lot.produced", lot, data, context=in_batch(batch))] + [
            EventDraft("packaging.consumed", p["lot"], {**p, "finished_lot": lot, "batch": batch},
                       context=in_batch(batch)) for p in packs]  # found from the packaging lot (indexed)
        return await run(lambda t: filled)

    def admin(caller: Caller) -> Accounts:
        if caller.uid not in (0, os.getuid()):
            raise ControlError("only root or the agent's own account may administer operator accounts")
        if accounts is None:
            raise ControlError("this agent has no operator accounts file")
        return accounts

    async def operator_add(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        acc = admin(caller)
        roles = args.get("roles")
        password = args.get("password")
        if not isinstance(roles, list) or not isinstance(password, str):
            raise ControlError("roles must be a list and password a text")
        a = Args({k: v for k, v in args.items() if k not in ("roles", "password")}, {"user", "name"})
        async with acc.lock:
            await record_outside_change(acc, keeper.chained_accounts, run, "found before an account change")
            before = keeper.chained_accounts()
            account = await asyncio.to_thread(acc.add, a.text("user"), a.text("name"), roles, password)
            data = {"user": account.user, "name": account.name, "roles": list(account.roles), "by": caller.name,
                    "accounts_sha256": acc.state()[0], "previous_sha256": before}
            await run(lambda t: [EventDraft("operator.added", account.user, data, context=NO_BATCH)])
        return {"user": account.user, "name": account.name, "roles": list(account.roles)}

    async def operator_list(args: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        return [{"user": x.user, "name": x.name, "roles": list(x.roles), "locked": x.locked,
                 "failures": x.failures} for x in admin(caller).list()]

    async def operator_unlock(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        user = Args(args, {"user"}).text("user")
        acc = admin(caller)
        async with acc.lock:
            await record_outside_change(acc, keeper.chained_accounts, run, "found before an account change")
            before = keeper.chained_accounts()
            account = acc.unlock(user)
            data = {"user": user, "by": caller.name, "accounts_sha256": acc.state()[0], "previous_sha256": before}
            await run(lambda t: [EventDraft("operator.unlocked", user, data, context=NO_BATCH)])
        return {"user": account.user, "locked": account.locked}

    return {"material.verify": material_verify, "deviation.close": deviation_close, "batch.release": batch_release,
            "cleaning.record": cleaning_record, "lot.register": lot_register, "lot.produce": lot_produce,
            "operator.add": operator_add, "operator.list": operator_list, "operator.unlock": operator_unlock}


def _checked(fn: Callable[[str], Any], arg: str) -> Any:
    try:
        return fn(arg)
    except RecordError as exc:
        raise ControlError(str(exc)) from None
