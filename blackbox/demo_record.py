"""The demo's batch record: the operators, cleaning, lots, verification, QC, filling and release
that people enter around the simulated batch, through the agent's control socket as an HMI would.

Demo only: the passwords below are the demo accounts' and are public.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from blackbox.buffer import Committed
from blackbox.control_client import call
from blackbox.model import now_us
from blackbox.sim import recipe

OPERATORS = [("zhang.wei", "Zhang Wei", ["operator"]), ("li.na", "Li Na", ["operator", "verifier"]),
             ("wang.fang", "Wang Fang", ["qc_analyst"]), ("wu.qing", "Wu Qing", ["qa_releaser"])]
PASSWORDS = {user: f"demo-{user}-pass" for user, _, _ in OPERATORS}
UNITS = ["WT-01", "OT-01", "EM-01", "FL-01"]
PACKAGING = [("PK-JAR-50", "JAR-2611-0042"), ("PK-CAP-50", "CAP-2611-0107"), ("PK-BOX-50", "BOX-2611-0009")]
RECORD_CONFIG: dict[str, Any] = {
    "units": UNITS,
    "cleaning_valid_hours": {"EM-01": 72, "FL-01": 48},
    "qc": {recipe.PRODUCT: [{"test": "ph", "low": 5.5, "high": 6.5}, {"test": "viscosity", "low": 8000, "high": 15000},
                            {"test": "TAMC", "high": 100}, {"test": "appearance"}]},
}
"""The ``record:`` section the demo's configuration gets; its QC tests go into the demo's approved specification."""


class RecordWatch:
    """The weighings and deviations of the demo's batch, from the agent's commits."""

    def __init__(self) -> None:
        self.weighings: list[str] = []
        self.deviations: list[str] = []

    def on_commit(self, committed: Committed) -> None:
        for ev in committed.events:
            if ev.type == "material.consumed" and ev.data.get("weighing") and not ev.data.get("verified_by"):
                self.weighings.append(str(ev.data["weighing"]))
            elif ev.type == "deviation.opened":
                self.deviations.append(str(ev.data["id"]))


def _sig(user: str) -> dict[str, str]:
    return {"user": user, "password": PASSWORDS[user]}


async def _call(socket: Path, cmd: str, args: dict[str, Any]) -> Any:
    return await asyncio.to_thread(call, socket, cmd, args, timeout=30.0)


async def before_batch(socket: Path) -> None:
    """Accounts and the units' cleaning, before the line starts the batch."""
    for user, name, roles in OPERATORS:
        await _call(socket, "operator.add", {"user": user, "name": name, "roles": roles, "password": PASSWORDS[user]})
    end = now_us() - 3_600_000_000
    for unit in sorted(UNITS, key=lambda u: u not in ("EM-01", "FL-01")):  # the product contact parts first
        await _call(socket, "cleaning.record", {
            "unit": unit, "method": "CIP" if unit != "FL-01" else "manual", "agent": "NaOH 1% then 70% ethanol",
            "start_us": end - 2_700_000_000, "end_us": end, "verification": "ATP swab < 150 RLU",
            "signature": _sig("zhang.wei"), "verifier_signature": _sig("li.na")})


async def register_lots(socket: Path, lots: list[tuple[str, str]]) -> None:
    """The material and packaging lots received, with their suppliers' lots and certificates."""
    for material, lot in [*lots, *PACKAGING]:
        await _call(socket, "lot.register", {
            "lot": lot, "material": material, "supplier": "Demo Supplier", "supplier_lot": f"S{lot}",
            "coa": f"COA-{lot}", "status": "released", "kind": "packaging" if material.startswith("PK-") else "raw",
            "signature": _sig("li.na")})


async def after_batch(socket: Path, batch: str, watch: RecordWatch) -> None:
    """Second-person verification, the lab's results, filling and release, once the batch ended."""
    for wid in watch.weighings:
        await _call(socket, "material.verify", {"weighing": wid, "signature": _sig("li.na")})
    await _call(socket, "qc.add", {"test": "TAMC", "value": 10, "spec_high": 100, "eng_unit": "cfu/g",
                                   "sample": "M-1", "batch": batch, "signature": _sig("wang.fang")})
    await _call(socket, "qc.add", {"test": "appearance", "value": "white smooth cream", "pass": True,
                                   "sample": "S-9", "batch": batch, "signature": _sig("wang.fang")})
    for dev in watch.deviations:
        await _call(socket, "deviation.close", {"id": dev, "reason": "retest within specification",
                                                "action": "sample re-taken", "signature": _sig("wu.qing")})
    await _call(socket, "lot.produce", {
        "lot": f"FG-{batch.split('-', 1)[-1]}", "batch": batch, "quantity": 9800, "unit": "jars",
        "packaging": [{"material": m, "lot": lot, "quantity": 9800, "unit": "pcs"} for m, lot in PACKAGING],
        "signature": _sig("zhang.wei")})
    await _call(socket, "batch.release", {"batch": batch, "signature": _sig("wu.qing")})
