"""``blackbox status`` and ``blackbox tail``: what the running agent is doing, from its control socket.

What they print is :mod:`blackbox.cli.agent_view`'s; :mod:`blackbox.cli.quick` runs the same
without typer when the arguments allow it (the usual case).
"""

from __future__ import annotations

from pathlib import Path

import typer

from blackbox.cli.agent_view import follow_tail, show_status
from blackbox.cli.common import ConfigOpt, control_socket
from blackbox.control_client import AgentUnreachable, CommandFailed

TagOpt = typer.Option([], "--tag", "-t", help="Tag name or pattern (EM-01.*); repeatable.")
UnitOpt = typer.Option([], "--unit", "-u", help="Equipment unit, e.g. EM-01; repeatable.")


def status(config: Path = ConfigOpt,
           json_out: bool = typer.Option(False, "--json", help="Print one JSON document: every tag (or those "
                                         "--tag/--unit pick), with the counts."),
           all_tags: bool = typer.Option(False, "--all", "--tags", help="List every tag, not only the first "
                                         "50 stale or not good ones."),
           tags: list[str] = TagOpt, units: list[str] = UnitOpt) -> None:
    """Show the running agent: sources, tag counts and the tags needing attention, production context,
    buffer, uplink and active alarms.

    Plain status lists at most 50 tags that are stale (no reading for three poll intervals) or not of
    good quality; --tag and --unit list every tag they pick, --all every tag.

    Example: blackbox status -c /etc/blackbox/blackbox.yaml --unit EM-01
    """
    try:
        show_status(control_socket(config), json_out=json_out, all_tags=all_tags, patterns=tags, units=units)
    except (AgentUnreachable, CommandFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def tail(config: Path = ConfigOpt, tags: list[str] = TagOpt, units: list[str] = UnitOpt,
         events: bool = typer.Option(False, "--events", help="Show events (batch, alarms…) too."),
         count: int = typer.Option(0, "--count", "-n", min=0, help="Stop after this many readings; 0: until ^C."),
         json_out: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Follow the readings as the agent commits them, filtered by tag or unit.

    Example: blackbox tail -c /etc/blackbox/blackbox.yaml --unit EM-01 --tag '*.temperature'
    """
    try:
        done = follow_tail(control_socket(config), patterns=tags, units=units, events=events, count=count,
                           json_out=json_out)
    except (AgentUnreachable, CommandFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not done:
        typer.echo("the agent stopped", err=True)
