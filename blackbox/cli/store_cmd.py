"""``blackbox store``: the regulator's traceability store."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from pathlib import Path

import orjson
import typer

from blackbox.cli.common import load_or_exit
from blackbox.seal import key_id, load_public_key, public_key_pem

app = typer.Typer(help="Run the traceability store and enroll gateway keys.\n\n"
                  "Example: blackbox store serve -c /etc/blackbox/store.yaml", no_args_is_help=True)


def database_url(config: Path | None, db: str | None) -> str:
    if db:
        return db
    if config is not None:
        return load_or_exit(config).config.store.database_url
    raise typer.BadParameter("give --config or --db")


@app.command("serve")
def serve(config: Path = typer.Option(..., "--config", "-c", help="Configuration with a store: section.")) -> None:
    """Subscribe to every gateway's batches, verify, store and acknowledge them until stopped.

    Example: blackbox store serve -c /etc/blackbox/store.yaml
    """
    from blackbox.store.db import open_store
    from blackbox.store.service import StoreService

    cfg = load_or_exit(config).config.store
    service = StoreService(open_store(cfg.database_url), cfg.mqtt, cfg.mqtt.topic_root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    typer.echo(f"store serving from {cfg.mqtt.host}:{cfg.mqtt.port} into {cfg.database_url.split('@')[-1]}",
               err=True)
    stop.wait()
    service.stop()


@app.command("enroll")
def enroll(gateway: str = typer.Argument(..., help="Gateway id, as in its configuration."),
           public_key: str = typer.Argument(..., help="Public key: a PEM file, or the key as base64/hex."),
           site: str = typer.Option(..., "--site", help="Site id the gateway belongs to."),
           config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
           db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config).")) -> None:
    """Trust PUBLIC_KEY for batches from GATEWAY of SITE.

    Example: blackbox store enroll gw-cream-01 gateway.pub.pem --site SH-PD-01 --db sqlite:///store.sqlite
    """
    from blackbox.store.db import open_store
    from blackbox.store.ingest import Ingestor

    text = Path(public_key).read_text() if Path(public_key).is_file() else public_key
    pub = load_public_key(text)
    Ingestor(open_store(database_url(config, db))).enroll(gateway, site, public_key_pem(pub))
    typer.echo(f"enrolled key {key_id(pub)} for gateway {gateway} of site {site}")


@app.command("gateways")
def gateways(config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
             db: str | None = typer.Option(None, "--db", help="Database URL (instead of --config)."),
             json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List every gateway: online status (from its last will), chain received, gaps, keys, rejections.

    Example: blackbox store gateways --db sqlite:///var/store.sqlite
    """
    from blackbox.model import iso
    from blackbox.store.db import open_store
    from blackbox.store.gateways import gateway_overview

    infos = gateway_overview(open_store(database_url(config, db)))
    if json_out:
        typer.echo(orjson.dumps([asdict(i) for i in infos], option=orjson.OPT_INDENT_2).decode())
        return
    for g in infos:
        status = f"{g.status or 'unknown'} since {iso(g.status_at_us)}" if g.status_at_us else "no status yet"
        typer.echo(f"{g.site}/{g.gateway}: {status}{' (' + g.status_reason + ')' if g.status_reason else ''}")
        chain = f"batches 1..{g.highest_batch_seq}" if g.highest_batch_seq else "no batch"
        typer.echo(f"  {chain}, {g.batches} stored, {g.missing_batches} missing, last at {iso(g.last_batch_at_us)}; "
                   f"{g.rejections} rejected")
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
    from blackbox.store.db import open_store
    from blackbox.store.gateways import export_batches

    written = export_batches(open_store(database_url(config, db)), site, gateway, out, first=first, last=last)
    typer.echo(f"wrote {len(written)} batch file(s) to {out}")
    if not written:
        raise typer.Exit(1)
