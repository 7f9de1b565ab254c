"""``blackbox store``: the regulator's traceability store."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

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
