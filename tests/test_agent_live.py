"""The live view behind status, tail and the metrics: bounded, filtered, never holding up the record."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from blackbox.agent.live import TAIL_QUEUE, LiveView, TagFilter, TailSubscription, tag_report
from blackbox.buffer import Committed
from blackbox.columns import ReadingBlock, SampleColumns
from blackbox.config import TagConfig
from blackbox.model import Event, Quality


def tag(name: str, unit: str) -> TagConfig:
    return TagConfig.model_validate({"name": name, "address": "hr:0", "type": "float32", "category": "process",
                                     "unit": unit, "eng_unit": "degC"})


TAGS = {t.name: t for t in [tag("EM-01.temperature", "EM-01"), tag("EM-01.vacuum", "EM-01"),
                            tag("OT-01.temperature", "OT-01")]}


def committed(seq: int, tags: list[str], events: tuple[str, ...] = ()) -> Committed:
    evs = [Event(seq + i, kind, "x", {"priority": "high"}, 10, "B1", "cool") for i, kind in enumerate(events)]
    first = seq + len(evs)
    samples = SampleColumns.good(tuple(tags), [20.0 + i for i in range(len(tags))])
    return Committed(ReadingBlock(first, 10, "B1", "cool", samples), evs)


def take_all(sub: TailSubscription) -> list[dict[str, Any]]:
    """The items waiting in ``sub``'s queue, taken out (none of them the end of the stream)."""
    items = []
    for _ in range(sub.queue.qsize()):
        item = sub.queue.get_nowait()
        assert item is not None, "the stream ended"
        items.append(item)
    return items


def test_tail_filters_by_pattern_and_unit_and_carries_context() -> None:
    live = LiveView(TAGS)
    temps = live.subscribe(TagFilter(["*.temperature"], []), with_events=False)
    em01 = live.subscribe(TagFilter([], ["EM-01"]), with_events=True)
    live.on_commit(committed(1, list(TAGS), ("alarm.raised",)))
    got = take_all(temps)
    assert [i["tag"] for i in got] == ["EM-01.temperature", "OT-01.temperature"]
    assert got[0] == {"seq": 2, "ts_us": 10, "tag": "EM-01.temperature", "unit": "EM-01", "value": 20.0,
                      "eng_unit": "degC", "quality": "good", "reason": None, "source_ts_us": None, "batch": "B1",
                      "phase": "cool"}
    items = take_all(em01)
    assert [i.get("event") or i["tag"] for i in items] == ["alarm.raised", "EM-01.temperature", "EM-01.vacuum"]
    assert live.readings_total == 3 and live.events_total["alarm.raised"] == 1
    assert live.alarm_raised_total["high"] == 1
    last = live.last_reading("OT-01.temperature")
    assert last is not None and last.seq == 4


def test_a_slow_tail_skips_and_counts_instead_of_growing_and_ends_with_the_agent() -> None:
    live = LiveView(TAGS)
    sub = live.subscribe(TagFilter([], []), with_events=False)
    for n in range(TAIL_QUEUE // 3 + 2):
        live.on_commit(committed(1 + 3 * n, list(TAGS)))
    assert sub.queue.qsize() == TAIL_QUEUE and sub.skipped == 3 * (TAIL_QUEUE // 3 + 2) - TAIL_QUEUE
    live.close()
    drained = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert drained[-1] is None  # the end marker got in even though the queue was full
    live.on_commit(committed(99_999, list(TAGS)))
    assert sub.queue.empty()  # no longer subscribed


def test_readings_per_second_counts_whole_cycles() -> None:
    """214 tags at 2 Hz is 428 readings/s whenever status asks, not less while a cycle is in progress."""
    now = [1000.0]
    live = LiveView(TAGS, clock=lambda: now[0])
    names = [f"T-{i:03d}.value" for i in range(214)]
    asked = []
    for cycle in range(60):  # 30 s of cycles
        now[0] = 1000.0 + cycle * 0.5
        live.on_commit(committed(1 + cycle * 214, names))
        now[0] += 0.37  # status asks between two commits
        asked.append(live.readings_per_second())
    assert asked[0] == 0.0  # one commit: no rate yet
    assert asked[-40:] == [428.0] * 40
    now[0] += 11.0  # the commits stopped
    assert live.readings_per_second() == 0.0


def test_status_lists_every_tag_with_its_age_and_staleness_from_a_snapshot() -> None:
    live = LiveView(TAGS, poll_s={"EM-01.temperature": 0.5, "EM-01.vacuum": 10.0})
    live.on_commit(committed(1, ["EM-01.temperature", "EM-01.vacuum"]))  # at 10 µs
    rows, last = live.snapshot()
    live.on_commit(committed(3, ["EM-01.temperature"]))  # after the snapshot: not in it
    now = 10 + 3_000_000  # 3 s later: stale after 3 x 0.5 + 1 s, not after 3 x 10 + 1 s
    report = tag_report(rows, last, now)
    assert orjson.loads(report.json) == [
        {"tag": "EM-01.temperature", "unit": "EM-01", "eng_unit": "degC", "age_s": 3.0, "stale": True,
         "value": 20.0, "quality": "good", "reason": None},
        {"tag": "EM-01.vacuum", "unit": "EM-01", "eng_unit": "degC", "age_s": 3.0, "stale": False,
         "value": 21.0, "quality": "good", "reason": None},
        {"tag": "OT-01.temperature", "unit": "OT-01", "eng_unit": "degC", "age_s": None, "stale": True,
         "value": None, "quality": None, "reason": None}]  # never read
    assert report.counts == {"configured": 3, "matching": 3, "stale": 2, "never_read": 1, "bad": 0, "uncertain": 0,
                             "attention": 2, "listed": 3}


PLANT = {t.name: t for t in [tag(f"{unit}.{name}", unit) for unit in ("EM-01", "EM-02", "OT-01")
                             for name in ("temperature", "vacuum", "speed")]}
"""Nine tags, each in a state of its own (``PLANT_STATE``), at 1 s poll intervals: stale after 4 s."""
PLANT_STATE = {  # tag: (quality, age in seconds); absent: never read
    "EM-01.temperature": (Quality.GOOD, 1.0), "EM-01.vacuum": (Quality.BAD, 1.0),
    "EM-01.speed": (Quality.GOOD, 9.0),
    "EM-02.temperature": (Quality.UNCERTAIN, 1.0), "EM-02.vacuum": (Quality.GOOD, 2.0),
    "EM-02.speed": (Quality.BAD, 9.0),
    "OT-01.temperature": (Quality.GOOD, 0.5), "OT-01.vacuum": (Quality.GOOD, 3.0)}


@pytest.mark.parametrize(("patterns", "units", "attention_only", "limit", "listed", "counts"), [
    ([], [], False, None, list(PLANT), {"matching": 9, "stale": 3, "never_read": 1, "bad": 2, "uncertain": 1,
                                        "attention": 5}),
    ([], [], True, None, ["EM-01.vacuum", "EM-01.speed", "EM-02.temperature", "EM-02.speed", "OT-01.speed"],
     {"matching": 9, "stale": 3, "never_read": 1, "bad": 2, "uncertain": 1, "attention": 5}),
    ([], [], True, 2, ["EM-01.vacuum", "EM-01.speed"],  # the counts still cover every tag
     {"matching": 9, "stale": 3, "never_read": 1, "bad": 2, "uncertain": 1, "attention": 5}),
    ([], [], False, 0, [], {"matching": 9, "stale": 3, "never_read": 1, "bad": 2, "uncertain": 1, "attention": 5}),
    ([], ["EM-02"], False, None, ["EM-02.temperature", "EM-02.vacuum", "EM-02.speed"],
     {"matching": 3, "stale": 1, "never_read": 0, "bad": 1, "uncertain": 1, "attention": 2}),
    (["*.speed"], [], True, None, ["EM-01.speed", "EM-02.speed", "OT-01.speed"],
     {"matching": 3, "stale": 3, "never_read": 1, "bad": 1, "uncertain": 0, "attention": 3}),
    (["*.speed", "OT-01.*"], ["OT-01", "EM-01"], False, None,  # patterns and units: both must pick a tag
     ["EM-01.speed", "OT-01.temperature", "OT-01.vacuum", "OT-01.speed"],
     {"matching": 4, "stale": 2, "never_read": 1, "bad": 0, "uncertain": 0, "attention": 2}),
    (["EM-0[2-9].v*"], [], False, None, ["EM-02.vacuum"],
     {"matching": 1, "stale": 0, "never_read": 0, "bad": 0, "uncertain": 0, "attention": 0}),
    (["nothing"], [], False, None, [],
     {"matching": 0, "stale": 0, "never_read": 0, "bad": 0, "uncertain": 0, "attention": 0}),
])
def test_status_picks_lists_and_counts_tags(patterns: list[str], units: list[str], attention_only: bool,
                                            limit: int | None, listed: list[str], counts: dict[str, int]) -> None:
    live = LiveView(PLANT, poll_s=dict.fromkeys(PLANT, 1.0))
    now = 100_000_000
    for seq, (name, (quality, age)) in enumerate(PLANT_STATE.items(), start=1):
        samples = SampleColumns((name,), [1.5], [quality], [None if quality == Quality.GOOD else "why"], [None])
        live.on_commit(Committed(ReadingBlock(seq, now - int(age * 1e6), None, None, samples), []))
    rows, last = live.snapshot()
    pick = TagFilter(patterns, units)
    report = tag_report(rows, last, now, None if pick.everything else pick, attention_only, limit)
    got = orjson.loads(report.json)
    assert [t["tag"] for t in got] == listed
    assert report.counts == {"configured": 9, **counts, "listed": len(listed)}
    for t in got:  # each entry says the state it was listed for
        state: tuple[Quality | None, float | None] = PLANT_STATE.get(t["tag"], (None, None))
        listed_quality, listed_age = state
        assert (t["quality"], t["age_s"], t["stale"]) == (listed_quality, listed_age,
                                                         listed_age is None or listed_age > 4.0)
        assert t["reason"] == (None if listed_quality in (None, Quality.GOOD) else "why")
    # status --json: the same list written to sit in a document indented as orjson indents one
    indented = tag_report(rows, last, now, None if pick.everything else pick, attention_only, limit, indented=True)
    assert (orjson.dumps({"gateway": "gw", "tags": orjson.Fragment(indented.json), "alarms": []},
                         option=orjson.OPT_INDENT_2)
            == orjson.dumps({"gateway": "gw", "tags": got, "alarms": []}, option=orjson.OPT_INDENT_2))


def test_a_tail_picks_its_tags_in_every_cycle_of_the_same_tags() -> None:
    live = LiveView(TAGS)
    sub = live.subscribe(TagFilter(["*.vacuum"], []), with_events=False)
    same = tuple(TAGS)
    for n in range(3):  # the same tags object each cycle, as a driver hands it, then another one
        live.on_commit(Committed(ReadingBlock(1 + 3 * n, 10, None, None, SampleColumns.good(same, [1.0] * 3)), []))
    tags = ("OT-01.temperature", "EM-01.vacuum")
    live.on_commit(Committed(ReadingBlock(20, 10, None, None, SampleColumns.good(tags, [1.0, 2.0])), []))
    got = take_all(sub)
    assert [(i["seq"], i["tag"]) for i in got] == [(2, "EM-01.vacuum"), (5, "EM-01.vacuum"), (8, "EM-01.vacuum"),
                                                   (21, "EM-01.vacuum")]


# Each step commits ``tags`` (a name of the tags objects below) from ``seq`` on, with values value + i.
SHARED = {"all": tuple(TAGS), "em": ("EM-01.temperature", "EM-01.vacuum"), "ot": ("OT-01.temperature",)}
LAST_READING_CASES = {
    "one source, cycle after cycle": ([("all", 1, 10.0), ("all", 4, 20.0), ("all", 7, 30.0)],
                                      {"EM-01.temperature": (7, 30.0), "EM-01.vacuum": (8, 31.0),
                                       "OT-01.temperature": (9, 32.0)}),
    "a tag in two tags objects: the later commit wins": (
        [("em", 1, 10.0), ("all", 3, 20.0), ("em", 6, 40.0)],
        {"EM-01.temperature": (6, 40.0), "EM-01.vacuum": (7, 41.0), "OT-01.temperature": (5, 22.0)}),
    "re-committed after the other": ([("all", 1, 10.0), ("em", 4, 20.0), ("all", 6, 30.0)],
                                     {"EM-01.temperature": (6, 30.0), "EM-01.vacuum": (7, 31.0),
                                      "OT-01.temperature": (8, 32.0)}),
}


@pytest.mark.parametrize(("steps", "expected"), LAST_READING_CASES.values(), ids=LAST_READING_CASES.keys())
@pytest.mark.parametrize("read_between", [False, True], ids=["read at the end", "read after every commit"])
def test_the_last_reading_of_each_tag_is_its_latest_commit_s(
        steps: list[tuple[str, int, float]], expected: dict[str, tuple[int, float]], read_between: bool) -> None:
    """The live view keeps each source's last block and reads it into its table only when asked: whenever
    it is asked, each tag's last reading is the one of the latest commit holding the tag."""
    live = LiveView(TAGS)
    for name, seq, value in steps:
        tags = SHARED[name]
        live.on_commit(Committed(ReadingBlock(seq, seq * 10, None, None, SampleColumns.good(
            tags, [value + i for i in range(len(tags))])), []))
        if read_between:
            live.last_reading("EM-01.vacuum")
    got = {t: (r.seq, r.value) for t in TAGS if (r := live.last_reading(t)) is not None}
    assert got == expected
    _rows, snapshot = live.snapshot()
    assert {t: (last[0], last[2]) for t, last in snapshot.items()} == expected


def test_last_readings_stay_right_when_every_commit_brings_a_new_tags_object() -> None:
    """A driver that makes a new tags list every cycle: the unread blocks are read in once they are many."""
    live = LiveView(TAGS)
    for k in range(1000):
        live.on_commit(Committed(ReadingBlock(1 + 3 * k, 10, None, None, SampleColumns.good(
            list(TAGS), [float(k)] * 3)), []))
    last = live.last_reading("OT-01.temperature")
    assert last is not None and (last.seq, last.value) == (3000, 999.0)
