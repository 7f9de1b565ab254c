"""The complete batch record at the gateway: weighings to verify, QC and deviations, release,
cleaning of the units, material lots.

:class:`BatchRecord` watches every event about to be committed (operator entries and PLC-sourced
ones alike) and keeps what later checks need: the hand weighings still waiting for a second
person, each batch's product, QC results and deviations, the last cleaning of every unit and the
status of every registered lot. It also adds events of its own to the same commit: a
``deviation.opened`` for an out-of-spec QC result, a ``cleaning.check`` (and an alarm when it is
not valid) when a batch starts, an ``alarm.raised`` when a quarantined or rejected lot is
consumed. Its state is saved with every commit, like the context's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from blackbox.config.record import RecordConfig
from blackbox.model import Context, EventDraft
from blackbox.spec.enforce import QcBasis

MAX_BATCHES = 64
MAX_LOTS = 512
MAX_WEIGHINGS = 512
"""Bounds of what the record remembers: its state is saved with every commit, so it stays small."""
LOT_STATUSES = ("released", "quarantined", "rejected")
UNAPPROVED_QC = {"source": "configuration", "approved": False}
"""The basis of QC requirements taken from ``record.qc``: nobody but the gateway's administrator approved them."""


class RecordError(Exception):
    """An entry the batch record refuses (the message is for the operator)."""


class BatchRecord:
    def __init__(self, cfg: RecordConfig | None = None, saved: dict[str, Any] | None = None,
                 approved_qc: dict[str, QcBasis] | None = None) -> None:
        self.cfg = cfg or RecordConfig()
        self.approved_qc: dict[str, QcBasis] = dict(approved_qc or {})
        """Product -> QC tests of its approved specification (:func:`blackbox.spec.enforce.qc_specs`); a product
        not in it falls back to ``record.qc``, recorded as unapproved."""
        self.signing: Callable[[], bool] = lambda: False
        """Whether entries are signed (the gateway has operator accounts): only then do weighings wait
        for a verifier's signature."""
        self._s: dict[str, Any] = {"weighings": {}, "batches": {}, "cleaning": {}, "lots": {}, "n": {}}
        if saved:
            self._s.update(copy.deepcopy(saved))

    def state(self) -> dict[str, Any]:
        return self._s

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._s)

    def restore(self, saved: dict[str, Any]) -> None:
        self._s = saved

    def next_id(self, kind: str) -> str:
        n = self._s["n"][kind] = int(self._s["n"].get(kind, 0)) + 1
        return f"{kind}-{n}"

    # -- queries for the handlers ----------------------------------------------------------------

    def batch(self, batch: str) -> dict[str, Any]:
        b = self._s["batches"].get(batch)
        if b is None:
            raise RecordError(f"batch {batch!r} is not known to this gateway (not started here, or too long ago)")
        return dict(b)

    def product_of(self, batch: str) -> str | None:
        b = self._s["batches"].get(batch)
        return None if b is None else b.get("product")

    def weighing(self, wid: str) -> dict[str, Any]:
        w = self._s["weighings"].get(wid)
        if w is None:
            raise RecordError(f"no weighing {wid!r} waits for verification")
        return dict(w)

    def qc_requirements(self, product: str | None) -> QcBasis:
        """The QC tests ``product`` needs before release: its approved specification's, else ``record.qc``'s."""
        approved = self.approved_qc.get(product or "")
        if approved is not None:
            return approved
        return QcBasis(tuple(self.cfg.qc.get(product or "", [])), dict(UNAPPROVED_QC))

    def qc_spec(self, product: str | None, test: str) -> tuple[float | None, float | None, dict[str, Any]] | None:
        """``(low, high, basis)`` of ``test`` for ``product``, if a numeric specification is known."""
        req = self.qc_requirements(product)
        for t in req.tests:
            if t.test == test and (t.low is not None or t.high is not None):
                return t.low, t.high, req.basis
        return None

    def release_blockers(self, batch: str) -> list[str]:
        """Why ``batch`` cannot be released yet (empty: it can)."""
        b = self.batch(batch)
        out = []
        if b.get("released"):
            out.append("it is released already")
        if not b.get("ended"):
            out.append("it has not ended")
        missing = [r.test for r in self.qc_requirements(b.get("product")).tests if r.test not in b["qc"]]
        if missing:
            out.append(f"required QC result(s) missing: {', '.join(missing)}")
        open_devs = sorted(d for d, st in b["deviations"].items() if st == "open")
        if open_devs:
            out.append(f"deviation(s) open: {', '.join(open_devs)}")
        unverified = sorted(w for w, v in self._s["weighings"].items() if v["batch"] == batch)
        if unverified:
            out.append(f"weighing(s) not verified by a second person: {', '.join(unverified)}")
        return out

    def chained_accounts(self) -> str | None:
        """The digest of the operator accounts last recorded (None: never)."""
        found = self._s.get("accounts_sha256")
        return None if found is None else str(found)

    def deviation_batch(self, dev: str) -> str:
        for name, b in self._s["batches"].items():
            if b["deviations"].get(dev) == "open":
                return str(name)
        raise RecordError(f"no open deviation {dev!r}")

    # -- watching the events of a commit ---------------------------------------------------------

    def observe(self, drafts: Sequence[EventDraft], ctx: Context, ts_us: int) -> list[EventDraft]:
        """Update the record with ``drafts`` (about to be committed in ``ctx``); the events it adds."""
        extra: list[EventDraft] = []
        for d in drafts:
            batch = d.context.batch if d.context is not None else ctx.batch
            handler = getattr(self, "_on_" + d.type.replace(".", "_"), None)
            if handler is not None:
                extra += handler(d, batch, ctx, ts_us)
        return extra

    def _on_batch_started(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        name = str(d.data.get("batch"))
        batches = self._s["batches"]
        batches[name] = {"product": d.data.get("product"), "qc": {}, "deviations": {}, "ended": False,
                         "released": False}
        while len(batches) > MAX_BATCHES:
            batches.pop(next(iter(batches)))
        if not self.cfg.units:
            return []
        units = []
        for unit in self.cfg.units:
            last = self._s["cleaning"].get(unit)
            if last is None:
                units.append({"unit": unit, "status": "missing", "cleaning": None, "valid_until_us": None})
            else:
                ok = ts <= last["valid_until_us"]
                units.append({"unit": unit, "status": "valid" if ok else "expired", "cleaning": last["id"],
                              "valid_until_us": last["valid_until_us"]})
        bad = [u for u in units if u["status"] != "valid"]
        out = [EventDraft("cleaning.check", name, {"batch": name, "units": units, "valid": not bad})]
        if bad:
            what = ", ".join(f"{u['unit']} {u['status']}" for u in bad)
            out.append(EventDraft("alarm.raised", "cleaning", {
                "rule": "cleaning_validity", "tag": ",".join(str(u["unit"]) for u in bad), "level": "not_clean",
                "priority": "high", "value": what, "limit": None,
                "message": f"batch {name} started on equipment whose cleaning is not valid: {what}"}))
            out.append(self._deviation(name, d.context, "cleaning", f"batch started on equipment whose cleaning is "
                                       f"not valid: {what}", {"units": [u for u in bad]}))
        return out

    def _deviation(self, batch: str, context: Context | None, kind: str, reason: str,
                   data: dict[str, Any]) -> EventDraft:
        """Open a deviation of ``batch`` (release waits until QA closes it)."""
        dev = self.next_id("DEV")
        self._s["batches"][batch]["deviations"][dev] = "open"
        return EventDraft("deviation.opened", dev, {"id": dev, "batch": batch, "kind": kind, "reason": reason, **data},
                          context=context)

    def _on_batch_ended(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        b = self._s["batches"].get(str(d.data.get("batch")))
        if b is not None:
            b["ended"] = True
        return []

    def _on_batch_released(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        self._s["batches"][str(d.data["batch"])]["released"] = True
        return []

    def _on_qc_result(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        b = self._s["batches"].get(batch or "")
        if b is None:
            return []
        test = str(d.data.get("test"))
        b["qc"][test] = d.data.get("pass")
        if d.data.get("pass") is not False or batch is None:
            return []
        return [self._deviation(batch, d.context, "qc", "out-of-specification QC result", {
            "test": test, "value": d.data.get("value"), "sample": d.data.get("sample"),
            "spec_low": d.data.get("spec_low"), "spec_high": d.data.get("spec_high"),
            "spec_basis": d.data.get("spec_basis")})]

    def _on_deviation_closed(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        b = self._s["batches"].get(str(d.data.get("batch")))
        if b is not None:
            b["deviations"][str(d.data["id"])] = "closed"
        return []

    def _on_material_consumed(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        data = d.data
        if "weighing" not in data:
            data["weighing"] = self.next_id("W")
        if self.cfg.verified_weighings and not data.get("verified_by") and batch is not None and self.signing():
            _bounded(self._s["weighings"], MAX_WEIGHINGS)
            self._s["weighings"][data["weighing"]] = {
                "batch": batch, "material": data.get("material"), "lot": data.get("lot"),
                "performer": (data.get("performed_by") or {}).get("user")}
        out = []
        if data.get("in_tolerance") is False and batch is not None and batch in self._s["batches"]:
            out.append(self._deviation(batch, d.context, "weighing", "material addition outside its tolerance", {
                "weighing": data["weighing"], "material": data.get("material"), "lot": data.get("lot"),
                "target": data.get("target"), "actual": data.get("actual"), "tolerance": data.get("tolerance"),
                "eng_unit": data.get("eng_unit")}))
        status = self._s["lots"].get(str(data.get("lot")))
        if status not in ("quarantined", "rejected"):
            return out
        return [*out, EventDraft("alarm.raised", str(data.get("lot")), {
            "rule": "lot_status", "tag": data.get("material"), "level": status, "priority": "high",
            "value": data.get("lot"), "limit": "released",
            "message": f"lot {data.get('lot')} of {data.get('material')} is {status} but was consumed in "
                       f"batch {batch}"}, context=d.context)]

    def _on_lot_produced(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        out = []
        for p in d.data.get("packaging") or []:
            status = self._s["lots"].get(str(p.get("lot")))
            if status in ("quarantined", "rejected"):
                out.append(EventDraft("alarm.raised", str(p.get("lot")), {
                    "rule": "lot_status", "tag": p.get("material"), "level": status, "priority": "high",
                    "value": p.get("lot"), "limit": "released",
                    "message": f"packaging lot {p.get('lot')} is {status} but was used to fill "
                               f"{d.data.get('lot')}"}, context=d.context))
        return out

    def _on_material_verified(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        self._s["weighings"].pop(str(d.data.get("weighing")), None)
        return []

    def _on_lot_registered(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        lots = self._s["lots"]
        lots.pop(str(d.data["lot"]), None)
        if d.data.get("status") != "released":  # only the lots that must not be used are remembered
            _bounded(lots, MAX_LOTS)
            lots[str(d.data["lot"])] = d.data.get("status")
        return []

    def _on_operator_added(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        if d.data.get("accounts_sha256"):
            self._s["accounts_sha256"] = d.data["accounts_sha256"]
        return []

    _on_operator_unlocked = _on_operator_added
    _on_operator_accounts = _on_operator_added

    def _on_cleaning_recorded(self, d: EventDraft, batch: str | None, ctx: Context, ts: int) -> list[EventDraft]:
        self._s["cleaning"][str(d.data["unit"])] = {"id": d.data["id"], "end_us": d.data["end_us"],
                                                   "valid_until_us": d.data["valid_until_us"]}
        return []


def _bounded(d: dict[str, Any], limit: int) -> None:
    """Make room for one more entry in ``d``, dropping the oldest."""
    while len(d) >= limit:
        d.pop(next(iter(d)))
