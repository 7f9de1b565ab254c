"""``blackbox store approver|spec|action|retention``: joint control at the store (docs/joint-control.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import typer

from blackbox.cli.store_cmd import database_errors, database_url, open_reader, open_writer
from blackbox.model import iso, now_us
from blackbox.seal import KeyFileError, load_private_key
from blackbox.spec.approval import (
    ROLE_NAMES,
    ROLES,
    ApprovalError,
    add_signature,
    read_signatures,
    sign,
    signature_path,
    write_signatures,
)

ConfigOpt = typer.Option(None, "--config", "-c", help="Store configuration (its store: section).")
DbOpt = typer.Option(None, "--db", help="Database URL (instead of --config).")

approver_app = typer.Typer(help="The factory QA and regulator keys the store trusts for a site.\n\n"
                           "Example: blackbox store approver enroll qa.pub.pem --site SH-FX-01 --role qa -c store.yaml",
                           no_args_is_help=True)
spec_app = typer.Typer(help="Specifications the store keeps (every version, verified).\n\n"
                       "Example: blackbox store spec list --site SH-FX-01 -c store.yaml", no_args_is_help=True)
action_app = typer.Typer(help="Two-party actions: re-enroll a gateway, revoke a gateway key, purge past retention.\n\n"
                         "Example: blackbox store action apply revoke.json -c store.yaml", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _engine(config: Path | None, db: str | None) -> Any:
    return open_writer(database_url(config, db))


@approver_app.command("enroll")
def approver_enroll(public_key: Path = typer.Argument(..., help="Public key (PEM) of the approver."),
                    site: str = typer.Option(..., "--site", help="Site id."),
                    role: str = typer.Option(..., "--role", help="qa or regulator."),
                    config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Trust PUBLIC_KEY as the factory QA or regulator approver of SITE.

    Example: blackbox store approver enroll regulator.pub.pem --site SH-FX-01 --role regulator --db sqlite:///s.db
    """
    from blackbox.store.joint import JointError, enroll_approver

    try:
        text = public_key.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {public_key}: {exc}", 2) from None
    try:
        kid = enroll_approver(_engine(config, db), site, role, text)
    except JointError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"enrolled {ROLE_NAMES[role]} key {kid} for site {site}")


@spec_app.command("add")
def spec_add(file: Path = typer.Argument(..., help="Specification file; its signatures in FILE.sig."),
             site: str = typer.Option(..., "--site", help="Site id."),
             config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Keep a specification version, if both approvals verify with the site's keys (else refused, exit 1).

    A new file is also checked against the current specification model (as ``blackbox spec
    check`` does); what gateways applied is kept as they recorded it.

    Example: blackbox store spec add FC-050.v2.yaml --site SH-FX-01 --db sqlite:///store.sqlite
    """
    import yaml

    from blackbox.spec.model import SpecError, parse_spec_data
    from blackbox.store.joint import register_spec

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        signatures = json.loads(signature_path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise _fail(f"cannot read {file} and its signatures: {exc}", 2) from None
    try:
        parse_spec_data(data, str(file))
        invalid = None
    except SpecError as exc:
        invalid = str(exc)
    engine = _engine(config, db)
    with database_errors(), engine.begin() as conn:
        problem = register_spec(conn, site, data, signatures, "operator", refused=invalid)
    if problem:
        raise _fail(f"refused: {problem} (recorded)")
    typer.echo(f"kept {file} for site {site}: approved by the factory QA and the regulator")


@spec_app.command("list")
def spec_list(site: str = typer.Option(..., "--site", help="Site id."),
              config: Path | None = ConfigOpt, db: str | None = DbOpt,
              json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Every specification version the store holds for SITE, verified now.

    Example: blackbox store spec list --site SH-FX-01 --db sqlite:///store.sqlite
    """
    from blackbox.store.joint import stored_specs

    engine = open_reader(config, db)
    with database_errors(), engine.connect() as conn:
        specs = stored_specs(conn, site)
    rows: list[dict[str, Any]] = [{"id": s.spec_id, "product": s.product, "version": s.version, "sha256": s.sha256,
             "reason": s.reason, "approved": s.approved, "readable": s.record is not None, "problem": s.problem,
             "source": s.source, "received_at": iso(s.received_at_us),
             "approvals": [a.describe() for a in s.approvals]} for s in specs]
    if json_out:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for r in rows:
        state = "approved by " + "; ".join(r["approvals"]) if r["approved"] else f"NOT APPROVED: {r['problem']}"
        typer.echo(f"{r['id']} v{r['version']} ({r['sha256'][:16]}…) from {r['source']}: "
                   f"{r['reason'] or '(cannot be read)'} — {state}")
    if not rows:
        typer.echo("no specification")


@action_app.command("new")
def action_new(file: Path = typer.Argument(..., help="Action document to write (JSON)."),
               action: str = typer.Option(..., "--action", help="reenroll, revoke or purge."),
               site: str = typer.Option(..., "--site", help="Site id."),
               gateway: str = typer.Option(..., "--gateway", help="Gateway id."),
               reason: str = typer.Option(..., "--reason", help="Why (key loss report, retention decision...)."),
               public_key: Path | None = typer.Option(None, "--public-key", help="reenroll: the new key (PEM)."),
               key_id: str | None = typer.Option(None, "--key-id", help="revoke: the key id to revoke."),
               through: int | None = typer.Option(None, "--through", help="purge: sealed batches 1..THROUGH.")) -> None:
    """Write an action document for both parties to sign (blackbox store action sign).

    Example: blackbox store action new revoke.json --action revoke --site SH-FX-01 --gateway gw-cream-01
             --key-id 3f2a... --reason "gateway stolen, report 2026-118"
    """
    from pydantic import ValidationError

    from blackbox.store.joint import ActionDocument

    doc: dict[str, Any] = {"action": action, "site": site, "gateway": gateway, "reason": reason,
                           "requested_at": iso(now_us() // 1_000_000 * 1_000_000)}
    if public_key is not None:
        doc["public_key"] = public_key.read_text(encoding="ascii")
    if key_id is not None:
        doc["key_id"] = key_id
    if through is not None:
        doc["through_batch_seq"] = through
    try:
        ActionDocument.model_validate(doc)
    except ValidationError as exc:
        raise _fail("; ".join(e["msg"] for e in exc.errors(include_url=False)), 2) from None
    if file.exists():
        raise _fail(f"{file} exists; refusing to overwrite it")
    file.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(f"wrote {file}; now both parties sign it: blackbox store action sign {file} --role qa --key qa.key "
               "--signer NAME (and --role regulator)")


@action_app.command("sign")
def action_sign(file: Path = typer.Argument(..., help="Action document."),
                role: str = typer.Option(..., "--role", help="qa or regulator."),
                key: Path = typer.Option(..., "--key", help="Your approval private key."),
                signer: str = typer.Option(..., "--signer", help="Your name.")) -> None:
    """Approve an action document: add your signature to FILE.sig.

    Example: blackbox store action sign revoke.json --role regulator --key regulator.key --signer "Wang Fang"
    """
    from blackbox.spec.canonical import NotCanonical, canonical_sha256

    if role not in ROLES:
        raise _fail(f"--role must be qa or regulator, not {role!r}", 2)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        sha = canonical_sha256(data)
        private = load_private_key(key)
        sig_path = signature_path(file)
        existing = read_signatures(sig_path, "action") if sig_path.exists() else None
    except (OSError, ValueError, NotCanonical, KeyFileError, ApprovalError) as exc:
        raise _fail(str(exc), 2) from None
    sig = sign("action", sha, role, private, signer)
    write_signatures(sig_path, add_signature(existing, "action", sha, sig))
    typer.echo(f"signed the {data.get('action')} of {data.get('site')}/{data.get('gateway')} (sha256 {sha}) as "
               f"{ROLE_NAMES[role]} {signer}; signatures in {sig_path}")


@action_app.command("apply")
def action_apply(file: Path = typer.Argument(..., help="Action document; its signatures in FILE.sig."),
                 config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Carry out an action approved by both parties; refused (exit 1) otherwise. Either way it is recorded.

    Example: blackbox store action apply revoke.json -c /etc/blackbox/store.yaml
    """
    from blackbox.cli.common import store_config_or_exit
    from blackbox.config.store import RetentionConfig
    from blackbox.store.actions import perform
    from blackbox.store.joint import JointError

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {file}: {exc}", 2) from None
    try:
        signatures = json.loads(signature_path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        signatures = None
    retention = store_config_or_exit(config).retention if config is not None else RetentionConfig()
    action = data.get("action") if isinstance(data, dict) else None
    if action not in ("reenroll", "revoke", "purge"):
        raise _fail(f"{file}: not an action document (action must be reenroll, revoke or purge)", 2)
    try:
        with database_errors():
            approved, detail = perform(_engine(config, db), data, signatures, action, retention)
    except JointError as exc:
        raise _fail(f"refused: {exc} (recorded)") from None
    typer.echo(f"{detail}; approved by " + "; ".join(a.describe() for a in approved.approvals))


def retention(config: Path | None = ConfigOpt, db: str | None = DbOpt,
              due_only: bool = typer.Option(False, "--due", help="Only batches whose records are due."),
              json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Which production batches' records may go: kept until the product expires + 1 year (at least).

    Nothing is deleted here; a purge is a two-party action (blackbox store action new --action purge).

    Example: blackbox store retention -c /etc/blackbox/store.yaml --due
    """
    from dataclasses import asdict

    from blackbox.cli.common import store_config_or_exit
    from blackbox.config.store import RetentionConfig
    from blackbox.store.retention import retention_report

    cfg = store_config_or_exit(config).retention if config is not None else RetentionConfig()
    with database_errors():
        lines = [ln for ln in retention_report(open_reader(config, db), cfg) if ln.due or not due_only]
    if json_out:
        typer.echo(orjson.dumps([asdict(ln) for ln in lines], option=orjson.OPT_INDENT_2).decode())
        return
    for ln in lines:
        state = "DUE" if ln.due else "keep"
        typer.echo(f"{state:4}  {ln.site}/{ln.gateway}  {ln.batch}  {ln.product or '-'}  "
                   f"ended {iso(ln.ended_at_us) or '-'}  keep until {iso(ln.keep_until_us) or 'not ended'}"
                   f"  ({ln.basis})")
    typer.echo(f"{sum(ln.due for ln in lines)} of {len(lines)} batch(es) due", err=True)
