"""``blackbox config``: check configuration files."""

from __future__ import annotations

from pathlib import Path

import typer

from blackbox.cli.common import load_or_exit, store_config_or_exit
from blackbox.config.document import Config
from blackbox.config.seal import batch_size_hint

app = typer.Typer(help="Check configuration files and print their reference.\n\n"
                  "Example: blackbox config check config/demo.yaml", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="Configuration file to check.")) -> None:
    """Validate FILE and report every problem at once (file:line: field.path: reason); exit 2 if any.

    A gateway's file and a store's file (only a store: section) are both checked.

    Example: blackbox config check config/demo.yaml
    """
    if _store_only(file):
        store = store_config_or_exit(file)
        typer.echo(f"{file}: OK — store file: database {_redacted(store.database_url)}, broker "
                   f"{store.mqtt.host}:{store.mqtt.port}{' (TLS)' if store.mqtt.tls else ''}")
        return
    loaded = load_or_exit(file)
    cfg = loaded.config
    n_tags = sum(len(s.tags) for s in cfg.sources)
    typer.echo(f"{file}: OK — site {cfg.site.id}, gateway {cfg.gateway.id}, {len(cfg.sources)} sources, "
               f"{n_tags} tags, {len(cfg.rules)} rules (sha256 {loaded.sha256[:16]}…)")
    hint = batch_size_hint(cfg.seal, sum(len(s.tags) / s.poll_interval for s in cfg.sources))
    if hint is not None:
        typer.echo(f"hint: {hint}")
    _check_specification(loaded.config)


def _check_specification(cfg: Config) -> None:
    """Whether the agent would put the specifications in force; exit 2 if it would refuse them."""
    from blackbox.spec.enforce import REFUSALS, resolve

    if cfg.specification is None:
        typer.echo("no specification: the configured limits apply, and every report says they are UNAPPROVED")
        return
    try:
        in_force = resolve(cfg)
    except REFUSALS as exc:
        typer.echo(f"error: the agent would refuse the specification: {exc}", err=True)
        raise typer.Exit(2) from None
    for s in in_force.specs:
        typer.echo(f"specification {s.spec.ref()} ({s.sha256[:16]}…) approved by "
                   + "; ".join(a.describe() for a in s.approvals))


@app.command("reference")
def reference() -> None:
    """Print the reference of every configuration field (Markdown), generated from the models.

    Example: blackbox config reference > docs/config-reference.md
    """
    from blackbox.config_reference import reference as generate

    typer.echo(generate(), nl=False)


def _store_only(file: Path) -> bool:
    import yaml

    from blackbox.config.load import is_store_only

    try:
        return is_store_only(yaml.safe_load(file.read_bytes()))
    except (OSError, yaml.YAMLError, RecursionError):
        return False  # the full loader reports it


def _redacted(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
