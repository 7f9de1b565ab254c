"""What ``blackbox status`` and ``blackbox tail`` print: the agent's answer on stdout.

Free of typer (and of anything else slow to import) so that :mod:`blackbox.cli.quick` can run
these commands in the few tens of milliseconds a plain Python process takes to start; the typer
commands of :mod:`blackbox.cli.ops` call the same functions. Both raise
:class:`~blackbox.control_client.AgentUnreachable` and :class:`~blackbox.control_client.CommandFailed`
for their callers to report.
"""

from __future__ import annotations

import json
import sys
import time

from blackbox.control_client import call, call_text, stream

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing, datetime or pathlib (as mypy reads it)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from blackbox.control_client import SocketPath

ATTENTION_SHOWN = 50
"""Tags needing attention that plain ``status`` lists (a PLC that is down makes all its tags stale:
the count says how many, ``--unit``/``--tag``/``--all`` list them)."""


def status_args(all_tags: bool, json_out: bool, patterns: Sequence[str], units: Sequence[str]) -> dict[str, Any]:
    """What to ask the agent for: every tag picked for ``--json``, ``--all`` and the filters, else
    the first :data:`ATTENTION_SHOWN` of those needing attention."""
    args: dict[str, Any] = {"tags": list(patterns), "units": list(units)}
    if not (all_tags or json_out or patterns or units):
        args |= {"list": "attention", "limit": ATTENTION_SHOWN}
    return args


def show_status(socket: SocketPath, *, json_out: bool = False, all_tags: bool = False,
                patterns: Sequence[str] = (), units: Sequence[str] = ()) -> None:
    args = status_args(all_tags, json_out, patterns, units)
    if json_out:  # the agent writes the indented JSON (megabytes at 20,000 tags): copied out as it comes
        text = call_text(socket, "status", args | {"as_text": True})
        sys.stdout.flush()
        sys.stdout.buffer.write(text)
        sys.stdout.buffer.flush()
        return
    if args.get("list") == "attention":  # a few kilobytes: the standard library's JSON, without loading orjson
        st = call(socket, "status", args)
    else:  # up to megabytes (20,000 tags): decoded several times faster
        import orjson

        st = call(socket, "status", args, decode=orjson.loads)
    sys.stdout.write(status_text(st, filtered=bool(patterns or units), all_tags=all_tags))
    sys.stdout.flush()


def status_text(st: dict[str, Any], filtered: bool = False, all_tags: bool = False) -> str:
    """``status`` for a person: context, sources, tag counts and the tags listed, buffer, uplink, alarms."""
    ctx = st["context"]
    lines = [f"gateway {st['gateway']} (site {st['site']}), config {st['config_sha256'][:16]}…"]
    spec = st.get("specification") or {}
    lines.append("judged against " + (", ".join(f"specification {s['id']} v{s['version']} ({s['sha256'][:16]}…), "
                                                "approved by QA and regulator" for s in spec["specifications"])
                                      if spec.get("approved") else "the configured limits: UNAPPROVED"))
    lines.append(f"batch {ctx['batch'] or '-'}  product {ctx['product'] or '-'}  recipe {ctx['recipe'] or '-'}"
                 f"{' v' + ctx['recipe_version'] if ctx['recipe_version'] else ''}  phase {ctx['phase'] or '-'}\n")
    lines.append(f"{'source':<20} {'protocol':<8} {'state':<12} {'cycles':>8} {'cycle ms':>9} {'skipped':>8}  "
                 "last error")
    for s in st["sources"]:
        state = {True: "connected", False: "DOWN", None: "starting"}[s["connected"]]
        ms = f"{s['last_cycle_s'] * 1000:.1f}" if s["last_cycle_s"] is not None else "-"
        dropped = (s.get("details") or {}).get("dropped_answers")
        note = f"{dropped} answers dropped (not awaited)" if dropped else ""
        lines.append(f"{s['name']:<20} {s['protocol']:<8} {state:<12} {s['cycles']:>8} {ms:>9} {s['overruns']:>8}  "
                     + "; ".join(x for x in (s["last_error"], note) if x))
    lines.append("")
    lines += _tag_lines(st["tag_counts"], st["tags"], filtered, all_tags)
    b, u = st["buffer"], st["uplink"]
    lines.append(f"\nbuffer  last seq {b['last_seq']}, {b['readings_per_s']:.0f} readings/s; "
                 f"{b['undelivered_records']} records not yet acknowledged"
                 + ("" if (oldest := b["oldest_undelivered_age_s"]) is None else f" (oldest {_age(oldest)} old)")
                 + f", {b['undelivered_batches']} sealed batches pending, {b['unsealed_records']} unsealed")
    lines.append(f"        {_mb(b['used_bytes'])} used of {_mb(b['quota_bytes'])} quota"
                 f"{' (HELD: disk full)' if b['size_held_disk_full'] else ''}; {b['dropped_records']} records "
                 f"dropped, {b['failed_commits']} failed commits"
                 f"{'  (' + b['last_error'] + ')' if b['last_error'] else ''}")
    lines.append(f"uplink  {'connected' if u['connected'] else 'DOWN'}, store has everything through seq "
                 f"{u['delivered_through_seq']}, {u.get('in_flight', 0)} batches in flight"
                 + (f", {n} acknowledgements about batches not ours ignored" if (n := u.get("ignored_acks")) else "")
                 + f"{'  (' + u['last_error'] + ')' if u['last_error'] else ''}")
    if u.get("bad_receipts") or u.get("log_inconsistent"):
        lines.append(f"        receipts: {u.get('bad_receipts', 0)} refused"
                     f"{'  (' + u['last_bad_receipt'] + ')' if u.get('last_bad_receipt') else ''}, "
                     f"{u.get('log_inconsistent', 0)} store log inconsistencies; store tree head "
                     f"{u.get('store_tree_size')}")
    alarms = st["alarms"]
    lines.append(f"alarms  {len(alarms)} active" + "".join(
        f"\n  {a['level']:<9} {a['tag']}{'  (' + a['reason'] + ')' if a.get('reason') else ''}" for a in alarms))
    return "\n".join(lines) + "\n"


def _tag_lines(counts: dict[str, int], tags: list[dict[str, Any]], filtered: bool, all_tags: bool) -> list[str]:
    """The tag counts, then the tags listed and, when plain ``status`` lists only some, how to see the rest."""
    states = f"{counts['stale']} stale" + (f" ({counts['never_read']} never read)" if counts["never_read"] else "") \
        + f", {counts['bad']} bad" + (f", {counts['uncertain']} uncertain" if counts["uncertain"] else "")
    if filtered:
        head = f"tags    {counts['matching']} of {counts['configured']} picked: {states}"
    else:
        head = f"tags    {counts['configured']} configured, {states}"
    lines = [head + ("" if filtered or all_tags else " (--all lists every tag)")]
    lines += (_tag_line(t) for t in tags)
    if (more := counts["attention"] - len(tags)) > 0 and not (filtered or all_tags):
        lines.append(f"  … and {more} more stale or not good: --unit or --tag to narrow, --all for every tag")
    return lines


def _tag_line(t: dict[str, Any]) -> str:
    value = "-" if t["value"] is None else f"{t['value']} {t['eng_unit']}".strip()
    note = f"{t['quality'] or ''}{': ' + t['reason'] if t['reason'] else ''}"
    seen = "never read" if t["age_s"] is None else f"{_age(t['age_s'])} ago"
    return f"  {t['tag']:<32} {seen:>14}  {value:<20} {note}"


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


def follow_tail(socket: SocketPath, *, patterns: Sequence[str] = (), units: Sequence[str] = (), events: bool = False,
                count: int = 0, json_out: bool = False) -> bool:
    """Print the readings (and events) as the agent commits them; ``True`` once ``count`` readings are
    shown (``count`` 0: never), ``False`` when the agent stopped. ^C ends it quietly."""
    shown = 0
    try:
        for item in stream(socket, "tail", {"tags": list(patterns), "units": list(units), "events": events}):
            sys.stdout.write((_compact(item) if json_out else tail_line(item)) + "\n")
            sys.stdout.flush()  # one line at a time, also into a pipe
            if "tag" in item:
                shown += 1
                if count and shown >= count:
                    return True
    except KeyboardInterrupt:
        return True
    return False


def tail_line(item: dict[str, Any]) -> str:
    if "skipped" in item:
        return f"… {item['skipped']} readings skipped (this terminal fell behind)"
    when = _clock(item["ts_us"])
    where = f"{item['batch'] or '-'}/{item['phase'] or '-'}"
    if "event" in item:
        return f"{when} {item['seq']:>10} {'EVENT ' + item['event']:<32} {item['subject'] or ''} {where} " \
               f"{_compact(item['data'])}"
    value = "-" if item["value"] is None else f"{item['value']} {item['eng_unit'] or ''}".strip()
    quality = "" if item["quality"] == "good" else f"  [{item['quality']}: {item['reason']}]"
    return f"{when} {item['seq']:>10} {item['tag']:<32} {value:<20} {where}{quality}"


def _compact(doc: Any) -> str:
    """One line of JSON, as the agent writes it (no spaces, UTF-8 as is)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _clock(ts_us: int) -> str:
    """The time of day, UTC, to the millisecond: ``HH:MM:SS.mmm``."""
    seconds, micros = divmod(ts_us, 1_000_000)
    return f"{time.strftime('%H:%M:%S', time.gmtime(seconds))}.{micros // 1000:03d}"
