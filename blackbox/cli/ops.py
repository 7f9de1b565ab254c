"""``blackbox status`` and ``blackbox tail``: what the running agent is doing, from its control socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer

from blackbox.cli.common import ConfigOpt, agent_call, control_socket
from blackbox.control_client import AgentUnreachable, CommandFailed, stream
from blackbox.model import iso


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def status(config: Path = ConfigOpt,
           json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
           all_tags: bool = typer.Option(False, "--tags", help="List every tag, not only stale or bad ones.")) -> None:
    """Show the running agent: sources, tag ages, production context, buffer, uplink and active alarms.

    Example: blackbox status -c /etc/blackbox/blackbox.yaml --tags
    """
    st = agent_call(config, "status")
    if json_out:
        typer.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode())
        return
    ctx = st["context"]
    typer.echo(f"gateway {st['gateway']} (site {st['site']}), config {st['config_sha256'][:16]}…")
    spec = st.get("specification") or {}
    typer.echo("judged against " + (", ".join(f"specification {s['id']} v{s['version']} ({s['sha256'][:16]}…), "
                                              "approved by QA and regulator" for s in spec["specifications"])
                                    if spec.get("approved") else "the configured limits: UNAPPROVED"))
    typer.echo(f"batch {ctx['batch'] or '-'}  product {ctx['product'] or '-'}  recipe {ctx['recipe'] or '-'}"
               f"{' v' + ctx['recipe_version'] if ctx['recipe_version'] else ''}  phase {ctx['phase'] or '-'}\n")
    typer.echo(f"{'source':<20} {'protocol':<8} {'state':<12} {'cycles':>8} {'cycle ms':>9} {'skipped':>8}  last error")
    for s in st["sources"]:
        state = {True: "connected", False: "DOWN", None: "starting"}[s["connected"]]
        ms = f"{s['last_cycle_s'] * 1000:.1f}" if s["last_cycle_s"] is not None else "-"
        typer.echo(f"{s['name']:<20} {s['protocol']:<8} {state:<12} {s['cycles']:>8} {ms:>9} {s['overruns']:>8}  "
                   f"{s['last_error'] or ''}")
    tags = st["tags"]
    shown = tags if all_tags else [t for t in tags if t["stale"] or t["quality"] not in ("good", None)]
    typer.echo(f"\ntags    {len(tags)} configured, {sum(t['stale'] for t in tags)} stale, "
               f"{sum(t['quality'] == 'bad' for t in tags)} bad" + ("" if all_tags else " (--tags lists all)"))
    if shown:  # one write for thousands of lines (--tags at 20,000 tags), not one each
        typer.echo("\n".join(_tag_line(t) for t in shown))
    b, u = st["buffer"], st["uplink"]
    typer.echo(f"\nbuffer  last seq {b['last_seq']}, {b['readings_per_s']:.0f} readings/s; "
               f"{b['undelivered_records']} records not yet acknowledged"
               + ("" if (oldest := b["oldest_undelivered_age_s"]) is None else f" (oldest {_age(oldest)} old)")
               + f", {b['undelivered_batches']} sealed batches pending, {b['unsealed_records']} unsealed")
    typer.echo(f"        {_mb(b['used_bytes'])} used of {_mb(b['quota_bytes'])} quota"
               f"{' (HELD: disk full)' if b['size_held_disk_full'] else ''}; {b['dropped_records']} records dropped,"
               f" {b['failed_commits']} failed commits{'  (' + b['last_error'] + ')' if b['last_error'] else ''}")
    typer.echo(f"uplink  {'connected' if u['connected'] else 'DOWN'}, store has everything through seq "
               f"{u['delivered_through_seq']}, {u.get('in_flight', 0)} batches in flight"
               + (f", {n} acknowledgements about batches not ours ignored" if (n := u.get("ignored_acks")) else "")
               + f"{'  (' + u['last_error'] + ')' if u['last_error'] else ''}")
    if u.get("bad_receipts") or u.get("log_inconsistent"):
        typer.echo(f"        receipts: {u.get('bad_receipts', 0)} refused"
                   f"{'  (' + u['last_bad_receipt'] + ')' if u.get('last_bad_receipt') else ''}, "
                   f"{u.get('log_inconsistent', 0)} store log inconsistencies; store tree head "
                   f"{u.get('store_tree_size')}")
    alarms = st["alarms"]
    typer.echo(f"alarms  {len(alarms)} active" + "".join(
        f"\n  {a['level']:<9} {a['tag']}{'  (' + a['reason'] + ')' if a.get('reason') else ''}" for a in alarms))


def _tag_line(t: dict[str, Any]) -> str:
    value = "-" if t["value"] is None else f"{t['value']} {t['eng_unit']}".strip()
    note = f"{t['quality'] or ''}{': ' + t['reason'] if t['reason'] else ''}"
    seen = "never read" if t["age_s"] is None else f"{_age(t['age_s'])} ago"
    return f"  {t['tag']:<32} {seen:>14}  {value:<20} {note}"


def tail(config: Path = ConfigOpt,
         tags: list[str] = typer.Option([], "--tag", "-t", help="Tag name or pattern (EM-01.*); repeatable."),
         units: list[str] = typer.Option([], "--unit", "-u", help="Equipment unit, e.g. EM-01; repeatable."),
         events: bool = typer.Option(False, "--events", help="Show events (batch, alarms…) too."),
         count: int = typer.Option(0, "--count", "-n", min=0, help="Stop after this many readings; 0: until ^C."),
         json_out: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Follow the readings as the agent commits them, filtered by tag or unit.

    Example: blackbox tail -c /etc/blackbox/blackbox.yaml --unit EM-01 --tag '*.temperature'
    """
    socket_path = control_socket(config)
    shown = 0
    try:
        for item in stream(socket_path, "tail", {"tags": tags, "units": units, "events": events}):
            if json_out:
                typer.echo(orjson.dumps(item).decode())
            else:
                typer.echo(_tail_line(item))
            if "tag" in item:
                shown += 1
                if count and shown >= count:
                    return
    except (AgentUnreachable, CommandFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        return
    typer.echo("the agent stopped", err=True)


def _tail_line(item: dict[str, Any]) -> str:
    if "skipped" in item:
        return f"… {item['skipped']} readings skipped (this terminal fell behind)"
    when = (iso(item["ts_us"]) or "")[11:23]
    where = f"{item['batch'] or '-'}/{item['phase'] or '-'}"
    if "event" in item:
        return f"{when} {item['seq']:>10} {'EVENT ' + item['event']:<32} {item['subject'] or ''} {where} " \
               f"{orjson.dumps(item['data']).decode()}"
    value = "-" if item["value"] is None else f"{item['value']} {item['eng_unit'] or ''}".strip()
    quality = "" if item["quality"] == "good" else f"  [{item['quality']}: {item['reason']}]"
    return f"{when} {item['seq']:>10} {item['tag']:<32} {value:<20} {where}{quality}"
