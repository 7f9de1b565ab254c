"""``blackbox status``: what the running agent is doing, from its control socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer

from blackbox.cli.common import load_or_exit
from blackbox.control_client import AgentUnreachable, CommandFailed, call


def agent_call(config: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Call the agent of ``config``; exit 1 with the reason if it cannot be reached or refuses."""
    socket_path = load_or_exit(config).config.agent.control_socket
    try:
        return call(socket_path, cmd, args)
    except (AgentUnreachable, CommandFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def status(config: Path = typer.Option(..., "--config", "-c", help="The agent's configuration file."),
           json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Show the running agent: sources, production context, buffer, uplink and active alarms.

    Example: blackbox status -c /etc/blackbox/blackbox.yaml
    """
    st = agent_call(config, "status")
    if json_out:
        typer.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode())
        return
    ctx = st["context"]
    typer.echo(f"gateway {st['gateway']} (site {st['site']}), config {st['config_sha256'][:16]}…")
    typer.echo(f"batch {ctx['batch'] or '-'}  product {ctx['product'] or '-'}  phase {ctx['phase'] or '-'}\n")
    typer.echo(f"{'source':<20} {'protocol':<8} {'state':<12} {'cycles':>8} {'cycle ms':>9}  last error")
    for s in st["sources"]:
        state = {True: "connected", False: "DOWN", None: "starting"}[s["connected"]]
        ms = f"{s['last_cycle_s'] * 1000:.1f}" if s["last_cycle_s"] is not None else "-"
        typer.echo(f"{s['name']:<20} {s['protocol']:<8} {state:<12} {s['cycles']:>8} {ms:>9}  {s['last_error'] or ''}")
    b, u = st["buffer"], st["uplink"]
    typer.echo(f"\nbuffer  last seq {b['last_seq']}, {b['undelivered_batches']} batches not yet acknowledged")
    typer.echo(f"uplink  {'connected' if u['connected'] else 'DOWN'}, store has everything through seq "
               f"{u['delivered_through_seq']}{'  (' + u['last_error'] + ')' if u['last_error'] else ''}")
    alarms = st["alarms"]
    typer.echo(f"alarms  {len(alarms)} active" + "".join(f"\n  {a['level']:<2} {a['tag']}" for a in alarms))
