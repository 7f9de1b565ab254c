"""``blackbox store web``, ``store token …``, ``store user …`` and ``blackbox batches``: the regulator's window."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from blackbox.model import iso

if TYPE_CHECKING:
    from sqlalchemy import Engine

token_app = typer.Typer(help="API tokens of the store's web window (shown once, stored hashed).\n\n"
                        "Example: blackbox store token add inspector-li --role regulator -c store.yaml",
                        no_args_is_help=True)
user_app = typer.Typer(help="Users who log in to the store's pages.\n\n"
                       "Example: blackbox store user add qa.zhang --role factory_qa --site SH-PD-01 -c store.yaml",
                       no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="Configuration with a store: section.")
DbOpt = typer.Option(None, "--db", help="Database URL (instead of --config).")
RoleOpt = typer.Option(..., "--role", help="regulator, factory_qa or admin.")
SiteOpt = typer.Option(None, "--site", help="Site the principal may see (repeat; factory_qa: exactly one; "
                       "regulator: none for every site).")


def _engine(config: Path | None, db: str | None) -> Engine:
    from blackbox.cli.store_cmd import database_url
    from blackbox.store.db import open_store

    return open_store(database_url(config, db))


def web(config: Path = typer.Option(..., "--config", "-c", help="Configuration with a store: section."),
        host: str | None = typer.Option(None, "--host", help="Override store.web.host."),
        port: int | None = typer.Option(None, "--port", help="Override store.web.port.")) -> None:
    """Serve the HTTP API and the pages (a process separate from `store serve`) until stopped.

    Example: blackbox store web -c /etc/blackbox/store.yaml   # then open http://127.0.0.1:8080/
    """
    from blackbox.cli.common import store_config_or_exit
    from blackbox.store.db import StoreUnavailable
    from blackbox.web.app import serve

    cfg = store_config_or_exit(config)
    web_cfg = cfg.web.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    try:
        serve(cfg.database_url, web_cfg)
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@token_app.command("add")
def token_add(name: str = typer.Argument(..., help="Who holds the token (person or system)."),
              role: str = RoleOpt, site: list[str] | None = SiteOpt,
              days: int | None = typer.Option(None, "--days", help="Expire after this many days (default: never)."),
              config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Create an API token and print it — the only time it is shown.

    Example: blackbox store token add qa-system --role factory_qa --site SH-PD-01 -c store.yaml
    """
    from blackbox.model import now_us
    from blackbox.web.auth import AuthError, create_token

    expires = now_us() + days * 86_400_000_000 if days else None
    try:
        token = create_token(_engine(config, db), name, role, site, expires_at_us=expires)
    except AuthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
    typer.echo("store it now: it cannot be shown again (send it as 'Authorization: Bearer <token>')", err=True)


@token_app.command("list")
def token_list(config: Path | None = ConfigOpt, db: str | None = DbOpt,
               json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List tokens (id, holder, role, sites, created, revoked) — never their secrets.

    Example: blackbox store token list -c store.yaml
    """
    from dataclasses import asdict

    from blackbox.web.auth import list_tokens

    tokens = list_tokens(_engine(config, db))
    if json_out:
        typer.echo(orjson.dumps([asdict(t) for t in tokens], option=orjson.OPT_INDENT_2).decode())
        return
    for t in tokens:
        state = f"REVOKED {iso(t.revoked_at_us)}" if t.revoked_at_us else (
            f"expires {iso(t.expires_at_us)}" if t.expires_at_us else "active")
        typer.echo(f"{t.token_id}  {t.name}  {t.role}  {','.join(t.sites) if t.sites else 'all sites'}  "
                   f"created {iso(t.created_at_us)}  {state}")


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (as listed)."),
                 config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Revoke a token: it is refused from the next request on.

    Example: blackbox store token revoke 3f9a0c1d2e4b -c store.yaml
    """
    from blackbox.web.auth import revoke_token

    if not revoke_token(_engine(config, db), token_id):
        typer.echo(f"error: no active token {token_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")


@user_app.command("add")
def user_add(username: str = typer.Argument(..., help="Login name."), role: str = RoleOpt,
             site: list[str] | None = SiteOpt, config: Path | None = ConfigOpt, db: str | None = DbOpt) -> None:
    """Create a user; the password is read from BLACKBOX_PASSWORD or asked for (never an argument).

    Example: blackbox store user add inspector.li --role regulator -c store.yaml
    """
    from blackbox.web.auth import AuthError, create_user

    password = os.environ.get("BLACKBOX_PASSWORD") or getpass.getpass(f"password for {username}: ")
    try:
        create_user(_engine(config, db), username, password, role, site)
    except AuthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"user {username} ({role}) created")


@user_app.command("disable")
def user_disable(username: str = typer.Argument(..., help="Login name."), config: Path | None = ConfigOpt,
                 db: str | None = DbOpt) -> None:
    """Disable a user: their sessions end at once.

    Example: blackbox store user disable qa.zhang -c store.yaml
    """
    from blackbox.web.auth import disable_user

    if not disable_user(_engine(config, db), username):
        typer.echo(f"error: no enabled user {username!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"user {username} disabled")


def _day(value: str | None, end: bool = False) -> int | None:
    if value is None:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {value!r}") from None
    us = int(day.timestamp() * 1_000_000)
    return us + 86_400_000_000 - 1 if end else us


def batches(site: str | None = typer.Option(None, "--site", help="Only this site."),
            product: str | None = typer.Option(None, "--product", help="Only this product."),
            date_from: str | None = typer.Option(None, "--from", help="Started on or after (YYYY-MM-DD, UTC)."),
            date_to: str | None = typer.Option(None, "--to", help="Started on or before (YYYY-MM-DD, UTC)."),
            with_alarms: bool = typer.Option(False, "--with-alarms", help="Only batches with an alarm raised."),
            with_gaps: bool = typer.Option(False, "--with-gaps", help="Only batches with a recorded buffer gap."),
            limit: int = typer.Option(100, "--limit", min=1, help="At most this many."),
            config: Path | None = ConfigOpt, db: str | None = DbOpt,
            json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Search production batches in the store (a reused batch number is listed once per occurrence).

    Example: blackbox batches --site SH-PD-01 --product FC-050 --from 2026-11-01 --with-alarms -c store.yaml
    """
    from blackbox.cli.store_cmd import open_reader
    from blackbox.web.queries import search_batches

    result = search_batches(open_reader(config, db), sites=None, site=site, product=product,
                            from_us=_day(date_from), to_us=_day(date_to, end=True), with_alarms=with_alarms,
                            with_gaps=with_gaps, limit=limit)
    if json_out:
        typer.echo(orjson.dumps({"total": result.total, "items": [o.public() for o in result.items]},
                                option=orjson.OPT_INDENT_2).decode())
        return
    for o in result.items:
        occ = f" (occurrence {o.occurrence} of {o.n_occurrences})" if o.n_occurrences > 1 else ""
        typer.echo(f"{o.site}  {o.batch}{occ}  {o.product or '-'}  {iso(o.started_at_us)} .. "
                   f"{iso(o.ended_at_us) or 'not ended'}  {','.join(o.gateways)}")
    typer.echo(f"{result.total} batch number(s)", err=True)
