"""The batch record from the command line: operator accounts, weighing verification, deviations,
release, cleaning and lots. Every entry is signed; passwords are asked for, never arguments."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path

import typer

from blackbox.cli.batch import OperatorOpt, _recorded, signed
from blackbox.cli.common import ConfigOpt, agent_call

SignReq = typer.Option(..., "--sign", help="Your operator account; the password is asked for.")

operator_app = typer.Typer(help="Operator accounts of the gateway (root or the agent's account only).\n\n"
                                "Example: blackbox operator add li.na --name 'Li Na' --role verifier -c b.yaml",
                           no_args_is_help=True)
deviation_app = typer.Typer(help="Close deviations (an out-of-spec QC result opens one).\n\n"
                                 "Example: blackbox deviation close DEV-1 --reason R --action A --sign qa -c b.yaml",
                            no_args_is_help=True)
cleaning_app = typer.Typer(help="Record the cleaning of an equipment unit.\n\n"
                                "Example: blackbox cleaning record V-101 --method CIP --agent 'NaOH 1%' --start "
                                "2026-11-25T06:00 --end 2026-11-25T07:10 --sign zhang -c b.yaml",
                           no_args_is_help=True)
lot_app = typer.Typer(help="Material lots (status, supplier, CoA) and finished-goods lots filled from a batch.\n\n"
                           "Example: blackbox lot produce FG-0001 --batch B1 --quantity 1200 --packaging "
                           "PK-JAR:JAR-771:1200 --sign zhang -c b.yaml", no_args_is_help=True)


@operator_app.command("add")
def operator_add(user: str = typer.Argument(..., help="User id, e.g. li.na."),
                 name: str = typer.Option(..., "--name", help="Printed name shown with every signature."),
                 role: list[str] = typer.Option(..., "--role", help="operator, verifier, qc_analyst or qa_releaser "
                                                "(repeat for several)."),
                 config: Path = ConfigOpt) -> None:
    """Add an operator account; the password is asked for twice.

    Example: blackbox operator add li.na --name 'Li Na' --role operator --role verifier -c /etc/blackbox/blackbox.yaml
    """
    password = getpass.getpass(f"new password of {user}: ")
    if getpass.getpass("again: ") != password:
        typer.echo("error: the passwords differ", err=True)
        raise typer.Exit(2)
    result = agent_call(config, "operator.add", {"user": user, "name": name, "roles": role, "password": password})
    typer.echo(f"added {result['user']} ({result['name']}): {', '.join(result['roles'])}")


@operator_app.command("list")
def operator_list(config: Path = ConfigOpt) -> None:
    """List the operator accounts and whether they are locked.

    Example: blackbox operator list -c /etc/blackbox/blackbox.yaml
    """
    for a in agent_call(config, "operator.list", {}):
        state = "LOCKED" if a["locked"] else f"{a['failures']} failed attempt(s)" if a["failures"] else "active"
        typer.echo(f"{a['user']:<16} {a['name']:<24} {','.join(a['roles']):<32} {state}")


@operator_app.command("unlock")
def operator_unlock(user: str = typer.Argument(..., help="User id to unlock."), config: Path = ConfigOpt) -> None:
    """Unlock an account locked after wrong passwords.

    Example: blackbox operator unlock li.na -c /etc/blackbox/blackbox.yaml
    """
    agent_call(config, "operator.unlock", {"user": user})
    typer.echo(f"unlocked {user}")


def material_verify(weighing: str = typer.Argument(..., help="Weighing id printed when it was recorded, e.g. W-12."),
                    sign: str = SignReq, operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Verify a weighing as the second person (not the one who weighed).

    Example: blackbox material verify W-12 --sign li.na -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "material.verify", signed({"weighing": weighing}, sign, "verified"), operator))


@deviation_app.command("close")
def deviation_close(deviation: str = typer.Argument(..., help="Deviation id, e.g. DEV-3."),
                    reason: str = typer.Option(..., "--reason", help="Investigation result: why it happened."),
                    action: str = typer.Option(..., "--action", help="Corrective/preventive action taken."),
                    sign: str = SignReq, operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Close a deviation (QA).

    Example: blackbox deviation close DEV-3 --reason 'probe drift' --action 'probe recalibrated'
             --sign qa.wu -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "deviation.close", signed({"id": deviation, "reason": reason, "action": action},
                                                           sign, "reviewed"), operator))


def batch_release(batch: str = typer.Argument(..., help="Batch to release."), sign: str = SignReq,
                  operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Release a batch (QA releaser): refused while required QC results are missing, deviations are open or
    weighings unverified.

    Example: blackbox batch release FC050-2026-1125-01 --sign qa.wu -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "batch.release", signed({"batch": batch}, sign, "approved"), operator))


@cleaning_app.command("record")
def cleaning_record(unit: str = typer.Argument(..., help="Equipment unit, e.g. V-101."),
                    method: str = typer.Option(..., "--method", help="e.g. CIP, manual."),
                    agent: str = typer.Option(..., "--agent", help="Cleaning/sanitising agent."),
                    start: datetime = typer.Option(..., "--start", help="Start (local time, ISO 8601)."),
                    end: datetime = typer.Option(..., "--end", help="End (local time, ISO 8601)."),
                    verification: str | None = typer.Option(None, "--verification", help="e.g. swab ATP result."),
                    verifier_sign: str | None = typer.Option(None, "--verifier-sign", help="Second person who "
                                                             "verified the cleaning (asked for the password)."),
                    sign: str = SignReq, operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Record a cleaning of a unit; it stays valid for the unit's configured hours.

    Example: blackbox cleaning record EM-01 --method CIP --agent 'NaOH 1%' --start 2026-11-25T06:00
             --end 2026-11-25T07:10 --sign zhang.wei --verifier-sign li.na -c /etc/blackbox/blackbox.yaml
    """
    args = {"unit": unit, "method": method, "agent": agent, "start_us": int(start.timestamp() * 1e6),
            "end_us": int(end.timestamp() * 1e6), "verification": verification}
    _recorded(agent_call(config, "cleaning.record",
                         signed(signed(args, sign), verifier_sign, "verified", "verifier_signature"), operator))


@lot_app.command("register")
def lot_register(lot: str = typer.Argument(..., help="Internal lot id."),
                 material: str = typer.Option(..., "--material", help="Material code."),
                 status: str = typer.Option("released", "--status", help="released, quarantined or rejected."),
                 kind: str = typer.Option("raw", "--kind", help="raw or packaging."),
                 sublot: str | None = typer.Option(None, "--sublot"),
                 supplier: str | None = typer.Option(None, "--supplier"),
                 supplier_lot: str | None = typer.Option(None, "--supplier-lot"),
                 coa: str | None = typer.Option(None, "--coa", help="Certificate of analysis reference."),
                 quantity: float | None = typer.Option(None, "--quantity"),
                 unit: str | None = typer.Option(None, "--unit"),
                 sign: str = SignReq, operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Register a material lot received (consuming a quarantined or rejected lot raises an alarm).

    Example: blackbox lot register A-5501 --material RM-GLY --supplier Acme --supplier-lot S-88 --coa COA-88
             --sign li.na -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "lot.register", signed({
        "lot": lot, "material": material, "status": status, "kind": kind, "sublot": sublot, "supplier": supplier,
        "supplier_lot": supplier_lot, "coa": coa, "quantity": quantity, "unit": unit}, sign), operator))


@lot_app.command("produce")
def lot_produce(lot: str = typer.Argument(..., help="Finished-goods lot id."),
                batch: str = typer.Option(..., "--batch", help="Bulk batch it was filled from."),
                quantity: float = typer.Option(..., "--quantity", help="Units filled."),
                unit: str = typer.Option("pcs", "--unit"),
                packaging: list[str] = typer.Option([], "--packaging", help="MATERIAL:LOT[:QUANTITY] of a "
                                                    "packaging material consumed (repeat)."),
                sign: str = SignReq, operator: str | None = OperatorOpt, config: Path = ConfigOpt) -> None:
    """Record a finished-goods lot filled from a bulk batch, with its packaging-material lots.

    Example: blackbox lot produce FG-0001 --batch FC050-2026-1125-01 --quantity 1200
             --packaging PK-JAR:JAR-771:1200 --sign zhang.wei -c /etc/blackbox/blackbox.yaml
    """
    packs = []
    for p in packaging:
        parts = p.split(":")
        try:
            qty = float(parts[2]) if len(parts) == 3 else None
        except ValueError:
            qty = None
            parts = []
        if len(parts) not in (2, 3) or not all(parts[:2]):
            typer.echo(f"error: --packaging {p!r} is not MATERIAL:LOT[:QUANTITY]", err=True)
            raise typer.Exit(2)
        packs.append({"material": parts[0], "lot": parts[1], "quantity": qty})
    _recorded(agent_call(config, "lot.produce", signed({"lot": lot, "batch": batch, "quantity": quantity,
                                                        "unit": unit, "packaging": packs}, sign), operator))


def genealogy_cmd(lot: str = typer.Argument(..., help="A lot, supplier lot, bulk batch or finished-goods lot."),
                  reverse: bool = typer.Option(False, "--reverse/--forward", help="Trace back to the supplier lots "
                                               "(default: forward to the finished lots)."),
                  config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store."),
                  db: str | None = typer.Option(None, "--db", help="Store database URL (instead of --config)."),
                  site: list[str] = typer.Option([], "--site", help="Only through the records of this site "
                                                 "(repeat for several; default: every site)."),
                  json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Trace a lot through the genealogy: supplier lot -> material lot -> bulk batches -> finished lots, or back.

    Example: blackbox genealogy A-5501 --db sqlite:///var/store.sqlite
             blackbox genealogy FG-0001 --reverse --site SH-PD-01 -c store.yaml
    """
    from blackbox.cli import store_cmd
    from blackbox.store.genealogy import genealogy

    engine = store_cmd.open_reader(config, db)
    with store_cmd.database_errors():
        g = genealogy(engine, lot, "reverse" if reverse else "forward", sites=site or None)
    if json_out:
        typer.echo(g.model_dump_json(indent=2))
        return
    if not g.links:
        typer.echo(f"nothing is recorded {'upstream' if reverse else 'downstream'} of {lot!r}", err=True)
        raise typer.Exit(1)
    kinds = {n.id: n.kind for n in g.nodes}
    for link in g.links:
        qty = f"  {link.quantity:g} {link.unit or ''}" if link.quantity is not None else ""
        typer.echo(f"{kinds[link.source]} {link.source} --{link.relation}--> {kinds[link.target]} {link.target}"
                   f"{qty}  ({link.site}/{link.gateway})")
