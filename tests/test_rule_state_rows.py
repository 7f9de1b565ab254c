"""Rule state saved incrementally: a commit writes the rows of the rules whose state changed, and
the rows in the buffer always add up to the engine's whole state."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from test_buffer_schema import v2_buffer
from test_rule_cases import CASES, replay

from blackbox.buffer import Buffer
from blackbox.config import Rule, TagConfig
from blackbox.model import Context, Sample
from blackbox.rules import RuleEngine

US = 1_000_000
TAGS = {n: TagConfig.model_validate({"name": n, "address": "x", "type": "float", "category": "process",
                                     "unit": "U-1", "limits": [{"h": 80}]}) for n in ("T1", "T2", "T3")}


def engine(state: dict[str, Any] | None = None) -> RuleEngine:
    return RuleEngine([TypeAdapter(Rule).validate_python({"type": "threshold", "tag": t}) for t in TAGS], TAGS, state)


def saved_rows(e: RuleEngine, table: dict[str, str]) -> dict[str, str | None]:
    """Take the engine's rows as a commit does, apply them to ``table``; the rows written."""
    rows = e.state_rows()
    if rows.replace:
        table.clear()
    for key, text in rows.rows.items():
        if text is None:
            table.pop(key, None)
        else:
            table[key] = text
    e.state_saved(rows)
    return rows.rows


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_the_saved_rows_are_the_whole_state_after_every_cycle_of_every_rule_case(case_dir: Path) -> None:
    table: dict[str, str] = {}

    def check(e: RuleEngine) -> None:
        saved_rows(e, table)
        assert {k: orjson.loads(v) for k, v in table.items()} == orjson.loads(orjson.dumps(e.state()))

    got, expected = replay(case_dir, after_cycle=check)
    assert got == expected  # saving changes nothing the rules do


def test_a_commit_writes_only_the_rows_that_changed() -> None:
    e = engine()
    table: dict[str, str] = {}
    e.evaluate([Sample("T1", 20.0), Sample("T2", 20.0), Sample("T3", 20.0)], 1 * US, None, None)
    assert set(saved_rows(e, table)) == {""}  # the first commit of an engine writes it all: nothing but its own row
    e.evaluate([Sample("T1", 20.0), Sample("T2", 85.0), Sample("T3", 20.0)], 2 * US, None, None)
    written = saved_rows(e, table)
    assert set(written) == {"threshold:T2", ""}  # the alarm, and its start for the flood indicator
    assert orjson.loads(written["threshold:T2"] or "")["a"]["level"] == "H"
    e.evaluate([Sample("T1", 21.0), Sample("T2", 86.0), Sample("T3", 21.0)], 3 * US, None, None)
    assert saved_rows(e, table) == {}  # still in alarm, nothing new to keep
    e.evaluate([Sample("T1", 21.0), Sample("T2", 20.0), Sample("T3", 21.0)], 4 * US, None, None)
    cleared = orjson.loads(saved_rows(e, table)["threshold:T2"] or "")["a"]
    assert "level" not in cleared and cleared["acked"] is False  # back to normal, not acknowledged yet
    e.act("acknowledge", e.select(["T2"]), user="wang.fang", ts_us=5 * US)
    assert set(saved_rows(e, table)) == {"threshold:T2"}
    assert orjson.loads(table["threshold:T2"])["a"]["acked_by"] == "wang.fang"


def test_rows_of_a_failed_commit_are_written_by_the_next() -> None:
    e = engine()
    table: dict[str, str] = {}
    saved_rows(e, table)
    e.evaluate([Sample("T1", 85.0)], 1 * US, None, None)
    failed = e.state_rows()
    assert "threshold:T1" in failed.rows
    e.state_unsaved(failed)
    e.evaluate([Sample("T1", 86.0)], 2 * US, None, None)  # no new verdict
    assert set(saved_rows(e, table)) == {"threshold:T1", ""}


def test_a_restarted_engine_takes_back_the_rows_from_the_buffer(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.sqlite")
    e = engine()
    for t, value in enumerate((85.0, 20.0), start=1):
        events = e.evaluate([Sample("T1", value), Sample("T3", 90.0)], t * US, None, None)
        rows = e.state_rows()
        buffer.commit([], events, Context(), t * US, {}, rows)
        e.state_saved(rows)
    buffer.close()
    again = engine(Buffer(tmp_path / "b.sqlite").load_state()["rules"])
    assert [(a.id, a.level, a.acked) for a in again.alarms()] == [
        ("threshold:T1", None, False), ("threshold:T2", None, True), ("threshold:T3", "H", False)]


def test_the_rule_state_of_an_older_buffer_is_kept_by_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v2_buffer(path)
    old = {"v": 1, "alarms": {"threshold:T3": {"level": "H", "value": 90.0, "limit": 80.0, "since": 5, "changed": 5,
                                               "acked": False}},
           "monitors": {"threshold:T3": {"fp": "?", "level": "H", "s": None, "e": None}},
           "flood": {"active": False, "since": None, "during": 0, "starts": [[5, "threshold:T3"]]},
           "counts": {"threshold:T3": {"0": 1}, "threshold:gone": {"0": 4}}}
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE key='agent_state'",
                   (orjson.dumps({"context": {"batch": "B1"}, "rules": old}).decode(),))
    state = Buffer(path).load_state()
    assert state["context"] == {"batch": "B1"}
    again = engine(state["rules"])
    t3 = again.entries["threshold:T3"].alarm
    assert (t3.level, t3.value, t3.acked) == ("H", 90.0, False)
    assert again.counts.top(0, 1, 5) == [("threshold:gone", 4), ("threshold:T3", 1)]
