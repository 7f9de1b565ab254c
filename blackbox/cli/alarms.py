"""``blackbox alarms``: list the running agent's alarms and act on them (ack, shelve, …).

Actions go through the agent's control socket, which records who asked (the name given with
``--user``, qualified by the OS account) and when; the agent answers once the action is in the
record.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import typer

from blackbox.cli.common import ConfigOpt, agent_call
from blackbox.cli.tables import echo_table
from blackbox.model import iso

app = typer.Typer(help="List the running agent's alarms and acknowledge, shelve or take them out of service.\n\n"
                       "Example: blackbox alarms -c /etc/blackbox/blackbox.yaml",
                  invoke_without_command=True, no_args_is_help=False)

UserOpt = typer.Option(None, "--user", "-u", help="Who you are, for the record (default: your login name).")
AlarmsArg = typer.Argument(..., help="Alarm ids (e.g. threshold:EM-01.temperature) or tags (all their alarms).")

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in ``2h``, ``30m``, ``1h30m``, ``90s`` or ``90``."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise typer.BadParameter(f"{text!r} is not a duration like 2h, 30m, 1h30m or 90s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise typer.BadParameter("the duration must be positive")
    return total


def _when(ts_us: int | None) -> str:
    text = iso(ts_us)
    return text[:19].replace("T", " ") if text else "-"


def _value(a: dict[str, Any]) -> str:
    if a["value"] is None:
        return "-"
    value = f"{a['value']:.6g}" if isinstance(a["value"], float) else str(a["value"])
    return f"{value} {a['eng_unit']}".strip()


def _echo_table(alarms: list[dict[str, Any]]) -> None:
    if not alarms:
        typer.echo("(no alarms)")
        return
    rows = []
    for a in alarms:
        by = a["acked_by"] if a["state"] == "active_acknowledged" else a["shelved_by"] or ""
        note = " ".join(x for x in (by, a["note"] or "", "CHATTERING" if a["chattering"] else "",
                                    f"until {_when(a['shelved_until_us'])}" if a["shelved_until_us"] else "") if x)
        rows.append((a["alarm"], a["level"] or "-", a["state"], a["priority"], _value(a),
                     _when(a["since_us"] or a["changed_us"]), note))
    echo_table(("alarm", "level", "state", "priority", "value", "since", "by / note"), rows)


def _print_done(result: dict[str, Any], verb: str) -> None:
    for a in result["done"]:
        typer.echo(f"{verb} {a['alarm']} (now {a['state']})")


@app.callback()
def main(ctx: typer.Context,
         config: Path | None = typer.Option(None, "--config", "-c", help="The agent's configuration file."),
         everything: bool = typer.Option(False, "--all", help="Also list alarms at rest (normal)."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the running agent's alarms that are not at rest (without a subcommand).

    Example: blackbox alarms -c /etc/blackbox/blackbox.yaml --all
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo("error: give the agent's configuration with --config (see blackbox alarms --help)", err=True)
        raise typer.Exit(2)
    list_alarms(config, everything, json_out)


@app.command("list")
def list_alarms(config: Path = ConfigOpt,
                everything: bool = typer.Option(False, "--all", help="Also list alarms at rest (normal)."),
                json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the alarms: id, level, ISA-18.2 state, priority, value, since when, who acted.

    Example: blackbox alarms list -c /etc/blackbox/blackbox.yaml --json
    """
    result = agent_call(config, "alarms.list", {"all": everything})
    if json_out:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    _echo_table(result["alarms"])
    if result["flood"]["active"]:
        typer.echo(f"\nALARM FLOOD since {_when(result['flood']['since_us'])}")


@app.command()
def ack(alarms: list[str] | None = typer.Argument(None, help="Alarm ids or tags (all their alarms)."),
        config: Path = ConfigOpt, user: str | None = UserOpt,
        every: bool = typer.Option(False, "--all", help="Acknowledge every alarm awaiting acknowledgement.")) -> None:
    """Acknowledge alarms; the record keeps who and when.

    Example: blackbox alarms ack threshold:EM-01.temperature -c blackbox.yaml --user wang.fang
    """
    if not alarms and not every:
        typer.echo("error: name the alarms to acknowledge, or --all", err=True)
        raise typer.Exit(2)
    _print_done(agent_call(config, "alarms.ack", {"alarms": alarms or [], "all": every}, user), "acknowledged")


@app.command()
def shelve(alarms: list[str] = AlarmsArg, config: Path = ConfigOpt, user: str | None = UserOpt,
           duration: str = typer.Option(..., "--for", help="How long, e.g. 30m, 2h (at most alarms.max_shelve)."),
           reason: str = typer.Option(..., "--reason", help="Why; it goes into the record.")) -> None:
    """Shelve alarms for a while: hidden from the operator, still recorded; they return by themselves.

    Example: blackbox alarms shelve trend:EM-01.vacuum --for 30m --reason "seal replaced" -c blackbox.yaml
    """
    result = agent_call(config, "alarms.shelve", {"alarms": alarms, "duration_s": parse_duration(duration),
                                              "reason": reason}, user)
    _print_done(result, "shelved")


@app.command()
def unshelve(alarms: list[str] = AlarmsArg, config: Path = ConfigOpt, user: str | None = UserOpt) -> None:
    """Return shelved alarms before their shelving expires.

    Example: blackbox alarms unshelve trend:EM-01.vacuum -c blackbox.yaml
    """
    _print_done(agent_call(config, "alarms.unshelve", {"alarms": alarms}, user), "unshelved")


@app.command("out-of-service")
def out_of_service(alarms: list[str] = AlarmsArg, config: Path = ConfigOpt, user: str | None = UserOpt,
                   reason: str = typer.Option(..., "--reason", help="Why; it goes into the record.")) -> None:
    """Take alarms out of service (e.g. a transmitter being replaced): their rules stop judging.

    Example: blackbox alarms out-of-service EM-01.vacuum --reason "transmitter replaced" -c blackbox.yaml
    """
    _print_done(agent_call(config, "alarms.out_of_service", {"alarms": alarms, "reason": reason}, user),
                "out of service:")


@app.command("in-service")
def in_service(alarms: list[str] = AlarmsArg, config: Path = ConfigOpt, user: str | None = UserOpt) -> None:
    """Return alarms to service; their rules start judging afresh.

    Example: blackbox alarms in-service EM-01.vacuum -c blackbox.yaml
    """
    _print_done(agent_call(config, "alarms.in_service", {"alarms": alarms}, user), "in service:")


@app.command()
def top(config: Path = ConfigOpt,
        hours: float = typer.Option(24.0, "--hours", help="Count the starts of the last this many hours."),
        n: int = typer.Option(10, "-n", help="How many alarms to show."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The alarms that started most often: the first place to look in a flood.

    Example: blackbox alarms top -c blackbox.yaml --hours 168 -n 20
    """
    result = agent_call(config, "alarms.top", {"hours": hours, "n": n})
    if json_out:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    if not result["top"]:
        typer.echo(f"no alarm started in the last {hours:g} h")
        return
    echo_table(("starts", "alarm", "priority"), [
        (str(r["count"]), r["alarm"], (r["priority"] or "-") + ("  CHATTERING" if r["chattering"] else ""))
        for r in result["top"]], right=(0,))
