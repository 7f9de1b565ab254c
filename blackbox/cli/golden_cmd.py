"""``blackbox store golden set|list|withdraw``: a product's golden batch, chosen from the command line.

Whoever runs these holds the store's database URL, as an administrator does: a choice made here is
recorded as ``cli:<OS account>`` with the role ``admin``, beside the choices made through the pages
and the API.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from blackbox.model import iso

if TYPE_CHECKING:
    from sqlalchemy import Engine

golden_app = typer.Typer(help="Golden batches: the reference batch of a product at a site, used by the "
                         "comparison view (every choice is kept).\n\n"
                         "Example: blackbox store golden set SH-PD-01 FC050-2026-1101-01 --reason 'validated' "
                         "-c store.yaml", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="Configuration with a store: section.")
DbOpt = typer.Option(None, "--db", help="Database URL (instead of --config).")
ReasonOpt = typer.Option(None, "--reason", help="Why (kept with the choice).")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (KeyError, OSError):
        return "cli:unknown"


def _engines(config: Path | None, db: str | None) -> tuple[Engine, Engine]:
    """(reader, writer): the store must exist already (the reader says so in one line if it does not)."""
    from blackbox.cli.store_cmd import database_url, open_reader, open_writer

    reader = open_reader(config, db)
    return reader, open_writer(database_url(config, db))


@golden_app.command("set")
def golden_set(site: str = typer.Argument(..., help="The site."),
               batch: str = typer.Argument(..., help="The batch number; its product is the one it becomes golden for."),
               occurrence: int | None = typer.Option(None, "--occurrence", min=1,
                                                     help="Which run of a reused batch number (default: the latest)."),
               reason: str | None = ReasonOpt, config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Make a batch occurrence the golden batch of its product at its site (the previous one stays as history).

    Example: blackbox store golden set SH-PD-01 FC050-2026-1101-01 --occurrence 1 --reason "validated" -c store.yaml
    """
    from blackbox.web import golden, queries

    reader, writer = _engines(config, db)
    try:
        occ = queries.find_occurrence(reader, site, batch, occurrence)
        choice = golden.choose(writer, occ, by=_who(), role="admin", reason=reason)
    except queries.NotFound:
        which = f" occurrence {occurrence}" if occurrence else ""
        typer.echo(f"error: no batch {batch!r}{which} at site {site!r}", err=True)
        raise typer.Exit(1) from None
    except golden.GoldenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"golden batch of {choice.product} at {site}: {batch} (occurrence {choice.occurrence}, started "
               f"{iso(choice.started_at_us)})")


@golden_app.command("withdraw")
def golden_withdraw(site: str = typer.Argument(..., help="The site."),
                    product: str = typer.Argument(..., help="The product."),
                    reason: str | None = ReasonOpt, config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Withdraw a product's golden batch: its comparisons go back to its last batches.

    Example: blackbox store golden withdraw SH-PD-01 FC-050 --reason "recipe changed" -c store.yaml
    """
    from blackbox.web import golden

    try:
        golden.withdraw(_engines(config, db)[1], site, product, by=_who(), role="admin", reason=reason)
    except golden.GoldenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"golden batch of {product} at {site} withdrawn")


@golden_app.command("list")
def golden_list(site: str | None = typer.Option(None, "--site", help="Only this site."),
                product: str | None = typer.Option(None, "--product", help="Only this product (with --history)."),
                history: bool = typer.Option(False, "--history", help="Every choice and withdrawal, newest first."),
                json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
                config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """List the golden batches in force (or, with --history, every choice ever made).

    Example: blackbox store golden list --site SH-PD-01 --history -c store.yaml
    """
    from blackbox.cli.store_cmd import open_reader
    from blackbox.web import golden

    engine = open_reader(config, db)
    if history:
        choices = golden.history(engine, sites=None, site=site, product=product)
    else:
        choices = [c for c in golden.current_choices(engine, sites=None, site=site)
                   if product is None or c.product == product]
    if json_out:
        typer.echo(orjson.dumps([c.public() for c in choices], option=orjson.OPT_INDENT_2).decode())
        return
    for c in choices:
        what = f"{c.batch} (occurrence {c.occurrence})" if c.batch else "withdrawn"
        note = f"  {c.reason}" if c.reason else ""
        typer.echo(f"{c.site}  {c.product}  {what}  by {c.chosen_by} ({c.role})  {iso(c.chosen_at_us)}{note}")
