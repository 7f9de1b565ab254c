"""``blackbox store``: the regulator's traceability store."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from blackbox.cli.common import store_config_or_exit
from blackbox.seal import key_id, load_public_key, public_key_pem

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from blackbox.tlog.note import Verifier

app = typer.Typer(help="Run the traceability store and enroll gateway keys.\n\n"
                  "Example: blackbox store serve -c /etc/blackbox/store.yaml", no_args_is_help=True)


def database_url(config: Path | None, db: str | None) -> str:
    if db:
        return db
    if config is not None:
        return store_config_or_exit(config).database_url
    raise typer.BadParameter("give --config or --db")


def open_reader(config: Path | None, db: str | None) -> Engine:
    """The store opened read-only for a query command, or a one-line error and exit 1 (2 for a bad URL)."""
    from blackbox.store.db import StoreUnavailable, open_store_readonly

    try:
        return open_store_readonly(database_url(config, db))
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@contextmanager
def database_errors() -> Iterator[None]:
    """A database failing in the middle of a command (connection lost, permission refused) is one line, exit 1."""
    from sqlalchemy.exc import DBAPIError

    from blackbox.store.db import first_line

    try:
        yield
    except DBAPIError as exc:
        typer.echo(f"error: the store database failed: {first_line(exc)}", err=True)
        raise typer.Exit(1) from None


@app.command("migrate")
def migrate(config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
            db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config)."),
            revision: str = typer.Option("head", "--revision", help="Schema revision to upgrade to.")) -> None:
    """Create the store's tables, or upgrade them to this version's schema (Alembic); the only command that does.

    Example: blackbox store migrate --db postgresql://blackbox@db.example/blackbox
    """
    from blackbox.store.db import StoreUnavailable, make_engine, parse_store_url, where
    from blackbox.store.migrate import current_revision, upgrade_schema

    url = database_url(config, db)
    try:
        parsed = parse_store_url(url)
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    engine = make_engine(url)
    try:
        with database_errors():
            before = current_revision(engine)
            upgrade_schema(engine, revision)
            after = current_revision(engine)
    finally:
        engine.dispose()
    change = f"upgraded from {before} to {after}" if before != after else f"already at {after}"
    typer.echo(f"store schema of the {where(parsed)}: {change}")


@app.command("serve")
def serve(config: Path = typer.Option(..., "--config", "-c", help="Configuration with a store: section."),
          worker: str | None = typer.Option(None, "--worker", envvar="BLACKBOX_STORE_WORKER",
                                            help="Name of this worker when several share the batches (1, 2, ...): "
                                                 "appended to the MQTT client id, and worker N serves metrics on "
                                                 "store.metrics_port + N - 1."),
          metrics_port: int | None = typer.Option(None, "--metrics-port", min=0, max=65535,
                                                  help="Serve /metrics and /health on this port (overrides the "
                                                       "configuration).")) -> None:
    """Subscribe to every gateway's batches, verify, store and acknowledge them until stopped.

    Example: blackbox store serve -c /etc/blackbox/store.yaml --worker 2
    """
    from blackbox.store.service import run_store, worker_client_id, worker_metrics_port

    cfg = store_config_or_exit(config)
    try:
        client_id = worker_client_id(cfg.mqtt, worker)
        port = metrics_port if metrics_port is not None else worker_metrics_port(cfg, worker)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--worker") from None
    open_writer(cfg.database_url).dispose()  # an unreachable or unusable database: one line, exit 1
    if not cfg.key_file.is_file():  # every acknowledgement is a receipt signed with it
        typer.echo(f"error: no store key at {cfg.key_file}; create it with `blackbox store keys init -c {config}` "
                   f"and pin the key it prints on every gateway (uplink.store_key)", err=True)
        raise typer.Exit(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    typer.echo(f"store serving from {cfg.mqtt.host}:{cfg.mqtt.port} into {cfg.database_url.split('@')[-1]} "
               f"as {client_id}" + (f", metrics on {cfg.metrics_host}:{port}" if port is not None else ""), err=True)
    run_store(cfg, stop, worker=worker, metrics_port=port)


@app.command("enroll")
def enroll(gateway: str = typer.Argument(..., help="Gateway id, as in its configuration."),
           public_key: str = typer.Argument(..., help="Public key: a PEM file, or the key as base64/hex."),
           site: str = typer.Option(..., "--site", help="Site id the gateway belongs to."),
           config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
           db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config).")) -> None:
    """Trust PUBLIC_KEY for batches from GATEWAY of SITE (its first key; another key is a two-party re-enrolment).

    Example: blackbox store enroll gw-cream-01 gateway.pub.pem --site SH-PD-01 --db sqlite:///store.sqlite
    """
    from blackbox.seal import KeyFileError
    from blackbox.store.ingest import EnrollmentError, Ingestor
    from blackbox.store.joint import JointError, check_first_enrolment

    try:
        pub = load_public_key(Path(public_key) if _names_a_file(public_key) else public_key)
    except KeyFileError as exc:
        typer.echo(f"error: {exc} (write the file with: blackbox keys export --public FILE -c CONFIG)", err=True)
        raise typer.Exit(2) from None
    engine = open_writer(database_url(config, db))
    try:
        with database_errors():
            check_first_enrolment(engine, site, gateway, key_id(pub))
            Ingestor(engine).enroll(gateway, site, public_key_pem(pub))
    except JointError as exc:
        typer.echo(f"error: refused: {exc} (recorded)", err=True)
        raise typer.Exit(1) from None
    except EnrollmentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"enrolled key {key_id(pub)} for gateway {gateway} of site {site}")


def _names_a_file(text: str) -> bool:
    """Whether the key argument is a file name (an existing file, or one that looks like a path)."""
    return Path(text).is_file() or "/" in text or text.endswith((".pem", ".pub"))


def open_writer(url: str) -> Engine:
    """The store opened for writing (schema migrated), or a one-line error and exit 1 (2 for a bad URL)."""
    from sqlalchemy.exc import DBAPIError

    from blackbox.store.db import StoreUnavailable, first_line, open_store, parse_store_url, where

    try:
        parsed = parse_store_url(url)
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    try:
        return open_store(url)
    except DBAPIError as exc:
        typer.echo(f"error: cannot open the {where(parsed)}: {first_line(exc)}", err=True)
        raise typer.Exit(1) from None


@app.command("gateways")
def gateways(config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
             db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config)."),
             json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List every gateway: online status (from its last will), chain received, gaps, keys, rejections.

    Example: blackbox store gateways --db sqlite:///var/store.sqlite
    """
    from blackbox.model import iso
    from blackbox.store.gateways import gateway_overview

    engine = open_reader(config, db)
    with database_errors():
        infos = gateway_overview(engine)
    if json_out:
        typer.echo(orjson.dumps([asdict(i) for i in infos], option=orjson.OPT_INDENT_2).decode())
        return
    for g in infos:
        status = f"{g.status or 'unknown'} since {iso(g.status_at_us)}" if g.status_at_us else "no status yet"
        typer.echo(f"{g.site}/{g.gateway}: {status}{' (' + g.status_reason + ')' if g.status_reason else ''}")
        chain = f"batches 1..{g.highest_batch_seq}" if g.highest_batch_seq else "no batch"
        typer.echo(f"  {chain}, {g.batches} stored, {g.missing_batches} missing, last at {iso(g.last_batch_at_us)}; "
                   f"{g.rejections} rejected")
        if g.records_stored != g.records_signed:
            typer.echo(f"  RECORDS DIFFER: the stored batches hold {g.records_signed:,} records, {g.records_stored:,} "
                       f"rows are stored; run `blackbox store verify --gateway {g.site}/{g.gateway}`")
        for k in g.keys:
            span = (f"records {k.valid_from_seq or 1}..{k.valid_to_seq if k.valid_to_seq is not None else ''}"
                    if k.valid_from_seq is not None or k.valid_to_seq is not None else "all records")
            origin = f"rotated from {k.rotated_from}" if k.rotated_from else f"enrolled by {k.enrolled_by}"
            revoked = f", REVOKED {iso(k.revoked_at_us)}" if k.revoked_at_us else ""
            typer.echo(f"  key {k.key_id}: {origin} {iso(k.enrolled_at_us)}, signs {span}{revoked}")


@app.command("export")
def export(gateway: str = typer.Argument(..., help="Gateway id."),
           site: str = typer.Option(..., "--site", help="Site id the gateway belongs to."),
           out: Path = typer.Option(..., "--out", help="Directory to write the batch files into."),
           first: int | None = typer.Option(None, "--from", help="First batch_seq (default: the first stored)."),
           last: int | None = typer.Option(None, "--to", help="Last batch_seq (default: the last stored)."),
           config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
           db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config).")) -> None:
    """Write stored batches exactly as received, one file each, for offline verification.

    Example: blackbox store export gw-cream-01 --site SH-PD-01 --out export/ --db sqlite:///store.sqlite
             && blackbox verify-batch export/*.bbx --key gateway.pub.pem
    """
    from blackbox.store.gateways import export_batches

    engine = open_reader(config, db)
    with database_errors():
        written = export_batches(engine, site, gateway, out, first=first, last=last)
    typer.echo(f"wrote {len(written)} batch file(s) to {out}")
    if not written:
        raise typer.Exit(1)


def _store_verifier(config: Path | None, store_key: str | None) -> Verifier | None:
    """The store's verifier: ``--store-key``, else the public half of the store key of ``--config`` if readable."""
    from blackbox.seal import SealError
    from blackbox.tlog.note import NoteError, parse_vkey

    if store_key is not None:
        try:
            return parse_vkey(store_key)
        except NoteError as exc:
            raise typer.BadParameter(str(exc), param_hint="--store-key") from None
    if config is None:
        return None
    from blackbox.store.tlog import load_signer

    store = store_config_or_exit(config)
    try:
        return load_signer(store.key_file, store.log_origin).verifier
    except (OSError, SealError, NoteError):
        return None  # an auditor's copy of the config without the store's private key: pass --store-key


def _since_us(value: str | None) -> int | None:
    """``--since`` as microseconds UTC: an ISO 8601 date or time (UTC unless it names an offset)."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or time, e.g. 2026-11-18 or "
                                 f"2026-11-18T08:00:00Z", param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000 + when.microsecond


@app.command("verify")
def verify(gateway: str | None = typer.Option(None, "--gateway", help="Only this gateway (GW or SITE/GW)."),
           since: str | None = typer.Option(None, "--since", help="Only batches with records from this time on "
                                            "(ISO 8601, UTC unless an offset is given)."),
           config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
           db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config)."),
           store_key: str | None = typer.Option(None, "--store-key", help="The store's verifier key (`blackbox "
                                                "store keys show`): check the signatures of its log checkpoints."),
           json_out: bool = typer.Option(False, "--json", help="One JSON object per line: each finding, then a "
                                         "summary.")) -> None:
    """Re-verify every stored batch and re-derive every row from it; report each difference, exit 1 if any.

    Checks every signature, chain link and gap, the keys against the enrolments and the rotations
    in the chain, and compares every readings, events, tag_configs (limits in force), sealed_batches
    and gateway_keys row with what the signed bytes yield. Read-only; streams, so any store size.

    Example: blackbox store verify --db postgresql://blackbox_reader@db.example.cn/blackbox --since 2026-11-01
    """
    from blackbox.store.findings import Difference
    from blackbox.store.verify import verify_store

    since_us = _since_us(since)
    verifier = _store_verifier(config, store_key)
    engine = open_reader(config, db)

    def show(d: Difference) -> None:
        if json_out:
            typer.echo(orjson.dumps(d.to_dict(), default=str).decode())
            return
        typer.echo(f"{d.severity.upper()} {d.code} {d.gateway}: {d.message}")

    with database_errors():
        stats = verify_store(engine, show, gateway=gateway, since_us=since_us, store_key=verifier)
    summary = {"gateways": stats.gateways, "batches": stats.batches, "batches_verified": stats.batches_verified,
               "readings": stats.readings, "events": stats.events, "findings": stats.findings,
               "log_entries": stats.log_entries, "checkpoints": stats.checkpoints,
               "checkpoints_signature_checked": stats.checkpoints_signed,
               "seconds": round(stats.seconds, 3), "readings_per_s": round(stats.readings_per_s())}
    if json_out:
        typer.echo(orjson.dumps({"summary": summary}).decode())
    else:
        verdict = "no differences" if not stats.findings else f"{stats.findings} finding(s)"
        typer.echo(f"{verdict}: {stats.batches} batch(es) of {stats.gateways} gateway(s), "
                   f"{stats.readings:,} readings and {stats.events:,} events re-derived in {stats.seconds:.2f} s "
                   f"({summary['readings_per_s']:,} readings/s)")
        if gateway is None:
            signed = (f"{stats.checkpoints_signed} signature(s) verified" if verifier is not None
                      else "signatures not checked: give --store-key")
            typer.echo(f"transparency log: {stats.log_entries:,} entries, {stats.checkpoints} signed checkpoint(s) "
                       f"({signed})")
    if gateway is not None and stats.gateways == 0:
        typer.echo(f"error: no gateway {gateway!r} in the store", err=True)
        raise typer.Exit(1)
    if stats.findings:
        raise typer.Exit(1)


def _register_web() -> None:
    """The web window's commands: ``store web``, ``store token …``, ``store user …``, ``store golden …``."""
    from blackbox.cli import golden_cmd, web_cmd

    app.command("web")(web_cmd.web)
    app.add_typer(web_cmd.token_app, name="token")
    app.add_typer(web_cmd.user_app, name="user")
    app.add_typer(golden_cmd.golden_app, name="golden")


_register_web()
