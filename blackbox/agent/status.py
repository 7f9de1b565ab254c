"""What an engineer asks the running agent: ``status``, ``tail``, the metrics and the health check.

All read the agent's live state and the buffer (by index lookups only, cheap at any depth);
none of them changes anything.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from blackbox.agent.control import Caller, ControlError, TextAnswer
from blackbox.agent.live import TagFilter, TagReport, tag_report
from blackbox.agent.metrics import Metric
from blackbox.buffer import Backlog, Buffer, Usage
from blackbox.model import now_us

if TYPE_CHECKING:
    from blackbox.agent.runtime import Agent

HEALTH_DB_TIMEOUT_S = 2.0
MAX_REUSE_S = 1.0
"""The oldest a tag list may be to answer a later ``status`` (less with a faster poll; see :func:`status_report`)."""


@dataclass(frozen=True)
class _Built:
    """The costly part of a ``status`` answer, kept to answer the same question again within a poll cycle."""

    question: tuple[Any, ...]
    at: float
    """:data:`clock` when it was built."""
    now_us: int
    report: TagReport
    figures: tuple[Backlog, Usage]


_last_built: weakref.WeakKeyDictionary[Agent, _Built] = weakref.WeakKeyDictionary()
clock = time.monotonic
"""The seconds a built tag list's age is measured in (a test sets its own)."""


async def _buffer_figures(agent: Agent) -> tuple[Backlog, Usage]:
    """The buffer's figures in one call on its thread: each call waits behind the commits and seals
    queued there (tens of milliseconds at 20,000 tags), so one wait instead of two."""
    return await agent.db(_read_figures, agent.buffer)


def _read_figures(buffer: Buffer) -> tuple[Backlog, Usage]:
    return buffer.backlog(), buffer.usage()


def _reuse_for(agent: Agent) -> float:
    """Seconds a built tag list answers the same question: the fastest poll interval, at most MAX_REUSE_S."""
    return min([MAX_REUSE_S, *(p.cfg.poll_interval for p in agent.pollers)])


def _forget(agent: Agent, built: _Built) -> None:
    """Drop ``built`` unless a newer tag list has taken its place."""
    if _last_built.get(agent) is built:
        del _last_built[agent]


def _alarms(agent: Agent) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"tag": tag, "level": level, "origin": "rules"}
                                 for tag, level in agent.recorder.rules.active_alarms()]
    out += [{"tag": "buffer", "level": "DATA_LOSS", "origin": "system", "reason": reason}
            for _key, reason in agent.recorder.alarms.active()]
    return out


LISTS = ("all", "attention")
"""What ``status`` lists of the tags it picks: every one (the default), or those needing attention."""


def tag_filter(agent: Agent, args: dict[str, Any]) -> TagFilter:
    """The tags a request names by ``tags`` (name patterns) and ``units``; an error if it names none
    (a ``tail`` would wait for ever, a ``status`` list nothing: a typing mistake, most likely)."""
    patterns, units = args.get("tags") or [], args.get("units") or []
    if not (isinstance(patterns, list) and isinstance(units, list)
            and all(isinstance(x, str) for x in [*patterns, *units])):
        raise ControlError("tags and units must be lists of strings")
    if unknown := sorted(set(units) - agent.live.units):
        raise ControlError(f"no tag belongs to unit(s) {', '.join(unknown)} "
                           f"(units: {', '.join(sorted(agent.live.units))})")
    pick = TagFilter(patterns, units)
    if patterns and not any(pick(name, tag.unit) for name, tag in agent.live.tags.items()):
        if units and any(TagFilter(patterns, ())(name, None) for name in agent.live.tags):
            raise ControlError(f"no tag of unit(s) {', '.join(units)} matches {', '.join(patterns)}")
        raise ControlError(f"no configured tag matches {', '.join(patterns)}")
    return pick


async def status_answer(agent: Agent, args: dict[str, Any]) -> dict[str, Any] | TextAnswer:
    """The ``status`` command: :func:`status_report`, or with ``as_text`` (``blackbox status --json``)
    that report as the indented JSON text the command prints, which the command then neither decodes
    nor re-encodes (4 MB at 20,000 tags: about 30 ms of its CPU)."""
    as_text = args.get("as_text", False)
    if not isinstance(as_text, bool):
        raise ControlError("as_text must be true or false")
    if not as_text:
        return await status_report(agent, args)
    report = await status_report(agent, args, indented_tags=True)
    return TextAnswer(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


async def status_report(agent: Agent, args: dict[str, Any] | None = None, *,
                        indented_tags: bool = False) -> dict[str, Any]:
    """The answer to ``blackbox status``; ``args`` may narrow its list of tags (every tag without them):
    ``tags`` and ``units`` pick tags as ``tail`` does, ``list`` is ``"attention"`` for the stale and
    not-good ones only, ``limit`` caps the list. ``tag_counts`` always counts every picked tag.

    The list of tags (20,000 at most scales) is built and serialised on a worker thread from a
    snapshot of the live view, one request at a time, so that asking status back to back never
    holds the event loop — and the polls it runs — for more than a copy of a dict; it goes into
    the answer as ready-made JSON (:class:`orjson.Fragment`), while the buffer's figures are asked
    of the buffer's thread (which may be busy with commits) at the same time. The same question
    asked again within the fastest source's poll interval (at most :data:`MAX_REUSE_S`) is answered
    with that list and those figures: they could not be newer than one poll cycle anyway, and
    status asked in a loop then costs the agent almost nothing. ``indented_tags``: the list is
    written for an answer indented by two spaces (:func:`status_answer`), not for a JSON line.
    """
    args = args or {}
    listing, limit = args.get("list", "all"), args.get("limit")
    if listing not in LISTS:
        raise ControlError(f"list must be one of {', '.join(LISTS)}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ControlError("limit must be a whole number, 0 or more")
    pick = tag_filter(agent, args)
    question = (tuple(args.get("tags") or ()), tuple(args.get("units") or ()), listing, limit, indented_tags)
    async with agent.live.building:  # one at a time: overlapping requests queue, the polls keep their share
        built = _last_built.get(agent)
        if built is None or built.question != question or clock() - built.at >= _reuse_for(agent):
            rows, last = agent.live.snapshot()
            started, now = clock(), now_us()
            report, figures = await asyncio.gather(
                asyncio.to_thread(tag_report, rows, last, now, None if pick.everything else pick,
                                  listing == "attention", limit, indented_tags),
                _buffer_figures(agent))
            built = _last_built[agent] = _Built(question, started, now, report, figures)
            # let it go once it may no longer answer: at 10,000 tags the whole list is megabytes
            asyncio.get_running_loop().call_later(_reuse_for(agent), _forget, agent, built)
    report, (backlog, usage), now = built.report, built.figures, built.now_us
    tags = orjson.Fragment(report.json)
    ctx = agent.recorder.tracker.context
    session = agent.session
    rec = agent.recorder
    return {
        "gateway": agent.cfg.gateway.id, "site": agent.cfg.site.id, "config_sha256": agent.loaded.sha256,
        "specification": agent.in_force.reference(),
        "started_at_us": agent.started_at_us,
        "context": {"batch": ctx.batch, "product": ctx.product, "recipe": ctx.recipe,
                    "recipe_version": ctx.recipe_version, "phase": ctx.phase},
        "sources": [{"name": p.cfg.name, "protocol": p.cfg.protocol, "connected": p.connected, "cycles": p.cycles,
                     "poll_interval_s": p.cfg.poll_interval, "last_cycle_s": p.last_cycle_s, "overruns": p.overruns,
                     "last_error": p.driver.health.last_error, "details": p.driver.health.details}
                    for p in agent.pollers],
        "tags": tags,
        "tag_counts": report.counts,
        "buffer": {"path": str(agent.buffer.path), "last_seq": backlog.last_seq,
                   "undelivered_records": backlog.undelivered_records,
                   "oldest_undelivered_age_s": None if backlog.oldest_undelivered_ts_us is None
                   else max(0.0, (now - backlog.oldest_undelivered_ts_us) / 1e6),
                   "unsealed_records": backlog.unsealed_records, "undelivered_batches": backlog.pending_batches,
                   "used_bytes": usage.used_bytes, "file_bytes": usage.file_bytes, "quota_bytes": usage.quota_bytes,
                   "size_held_disk_full": agent.buffer.size_held, "dropped_records": rec.dropped_records,
                   "failed_commits": rec.failed_commits, "last_error": rec.last_error,
                   "readings_per_s": round(agent.live.readings_per_second(), 1)},
        "uplink": {"connected": bool(session and session.connected),
                   "last_error": session.last_error if session else None,
                   "delivered_through_seq": agent.forwarder.last_delivered_seq,
                   "signing_key": agent.sealer.key_id, **asdict(agent.forwarder.stats())},
        "clock": {"jumps": rec.clock.jumps},
        "alarms": _alarms(agent),
    }


def tail_handler(agent: Agent) -> Any:
    """``tail``: every reading as it is committed, filtered by tag patterns and units."""

    async def tail(args: dict[str, Any], _caller: Caller) -> AsyncIterator[dict[str, Any]]:
        sub = agent.live.subscribe(tag_filter(agent, args), bool(args.get("events")))
        skipped = 0
        try:
            while (item := await sub.queue.get()) is not None:
                if sub.skipped != skipped:  # the client fell behind: say how much it missed
                    yield {"skipped": sub.skipped - skipped}
                    skipped = sub.skipped
                yield item
        finally:
            agent.live.unsubscribe(sub)

    return tail


async def collect_metrics(agent: Agent) -> list[Metric]:
    """Every metric of the agent, for ``GET /metrics``."""
    backlog, usage = await _buffer_figures(agent)
    rec, live, fwd = agent.recorder, agent.live, agent.forwarder
    now = now_us()
    cycle = Metric("blackbox_source_cycle_seconds", "gauge", "Duration of the source's last poll cycle.")
    connected = Metric("blackbox_source_connected", "gauge", "1 if the source is connected.")
    cycles = Metric("blackbox_source_cycles_total", "counter", "Poll cycles completed.")
    overruns = Metric("blackbox_source_overruns_total", "counter",
                      "Poll cycles skipped because a cycle took longer than the poll interval.")
    for p in agent.pollers:
        if p.last_cycle_s is not None:
            cycle.add(p.last_cycle_s, source=p.cfg.name)
        connected.add(1.0 if p.connected else 0.0, source=p.cfg.name)
        cycles.add(p.cycles, source=p.cfg.name)
        overruns.add(p.overruns, source=p.cfg.name)
    active = Metric("blackbox_alarms_active", "gauge", "Active alarms.")
    by_origin: dict[str, int] = {}
    for a in _alarms(agent):
        by_origin[a["origin"]] = by_origin.get(a["origin"], 0) + 1
    for origin in ("rules", "system"):
        active.add(by_origin.get(origin, 0), origin=origin)
    raised = Metric("blackbox_alarms_raised_total", "counter", "Alarms raised since the agent started, by priority.")
    for priority, n in sorted(live.alarm_raised_total.items()):
        raised.add(n, priority=priority)
    events = Metric("blackbox_events_total", "counter", "Events recorded since the agent started, by type.")
    for kind, n in sorted(live.events_total.items()):
        events.add(n, type=kind)
    oldest = backlog.oldest_undelivered_ts_us
    return [
        Metric("blackbox_readings_total", "counter", "Readings committed to the buffer since the agent started.")
        .add(live.readings_total),
        Metric("blackbox_readings_per_second", "gauge", "Readings committed per second, last ten seconds.")
        .add(live.readings_per_second()),
        cycle, connected, cycles, overruns,
        Metric("blackbox_buffer_last_seq", "gauge", "Last sequence number committed.").add(backlog.last_seq),
        Metric("blackbox_buffer_undelivered_records", "gauge", "Records the store has not acknowledged.")
        .add(backlog.undelivered_records),
        Metric("blackbox_buffer_oldest_undelivered_age_seconds", "gauge",
               "Age of the oldest record the store has not acknowledged.")
        .add(0.0 if oldest is None else max(0.0, (now - oldest) / 1e6)),
        Metric("blackbox_buffer_unsealed_records", "gauge", "Records not yet sealed into a batch.")
        .add(backlog.unsealed_records),
        Metric("blackbox_buffer_used_bytes", "gauge", "Bytes of the buffer database in use.").add(usage.used_bytes),
        Metric("blackbox_buffer_file_bytes", "gauge", "Bytes of the buffer database and WAL on disk.")
        .add(usage.file_bytes),
        Metric("blackbox_buffer_quota_bytes", "gauge", "Quota in force (the file's size while the disk is full).")
        .add(usage.quota_bytes or 0),
        Metric("blackbox_buffer_dropped_records_total", "counter",
               "Undelivered records dropped to make room (each drop is a buffer.gap event).")
        .add(rec.dropped_records),
        Metric("blackbox_buffer_failed_commits_total", "counter", "Commits the buffer refused.")
        .add(rec.failed_commits),
        Metric("blackbox_batches_pending", "gauge", "Sealed batches the store has not acknowledged.")
        .add(backlog.pending_batches),
        Metric("blackbox_batches_sealed_total", "counter", "Batches sealed since the agent started.")
        .add(agent.sealer.sealed),
        Metric("blackbox_batches_delivered_total", "counter", "Batches the store acknowledged since the agent started.")
        .add(fwd.delivered),
        Metric("blackbox_uplink_connected", "gauge", "1 if the MQTT session is up.")
        .add(1.0 if agent.session is not None and agent.session.connected else 0.0),
        active, raised, events,
        Metric("blackbox_clock_jumps_total", "counter", "Wall-clock jumps detected.").add(rec.clock.jumps),
    ]


async def health(agent: Agent) -> tuple[bool, str]:
    """Healthy: the buffer's thread answers and the last write to the buffer succeeded."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(HEALTH_DB_TIMEOUT_S):
            await agent.db(lambda: None)
    except TimeoutError:
        return False, f"the buffer thread did not answer within {HEALTH_DB_TIMEOUT_S} s"
    if agent.recorder.last_error is not None:
        return False, f"the buffer refuses writes: {agent.recorder.last_error}"
    return True, f"ok ({(time.monotonic() - started) * 1000:.1f} ms)"
