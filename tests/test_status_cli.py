"""``blackbox status`` against a real agent over its control socket: the tags needing attention
first, filters to see the rest, ``--json`` complete, and the same answer whichever way the command
starts (without typer for a configuration whose ``agent:`` section reads quickly, through typer and
the full validation otherwise).

The agent polls the simulated line's Modbus tags (one refused by the PLC: bad) and a second
source nobody answers (its tags never read: stale), every second, so that a good tag never turns
stale while the commands run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from acquisition_helpers import sim_source
from agent_helpers import BLACKBOX
from services import require_mosquitto

from blackbox.agent import status
from blackbox.agent.runtime import Agent
from blackbox.agent.status import status_report
from blackbox.broker import free_port
from blackbox.cli.agent_view import ATTENTION_SHOWN, status_text
from blackbox.config import load_config
from blackbox.seal import generate_key_file
from blackbox.sim import IllegalAddress, Simulator
from blackbox.sim.tags import TAGS

BAD = "FL-01.fill_weight"
"""Refused by the simulated PLC (hr:40-41): bad quality."""
MODBUS = [t.name for t in TAGS if t.protocol == "modbus"]
DEAD = [f"XX-09.t{i:03d}" for i in range(ATTENTION_SHOWN + 11)]
"""On a source nobody answers: never read, so stale; more than plain status lists."""
ALL = MODBUS + DEAD


def settled(tags: Any) -> bool:
    by_name = {t["tag"]: t for t in orjson.loads(orjson.dumps(tags))}
    return by_name[BAD]["quality"] == "bad" and all(by_name[n]["quality"] == "good" and not by_name[n]["stale"]
                                                    for n in MODBUS if n != BAD)


@dataclass
class Running:
    config: Path
    """Block style: the commands read the control socket from its ``agent:`` section."""
    flow_config: Path
    """The same in flow style: the commands validate it in full (through typer)."""
    socket: Path
    agent: Agent


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """One agent for the module: the commands only read it."""
    host, port = require_mosquitto()
    tmp_path = tmp_path_factory.mktemp("status")
    async with Simulator(speed=0, opcua_port=0, modbus_port=0,
                         faults=[IllegalAddress(table="hr", start=40, count=2)]) as sim:
        dead = {"name": "dead", "protocol": "modbus", "host": "127.0.0.1", "port": free_port(), "timeout": 0.2,
                "poll_interval": 1.0, "reconnect_min": 0.5, "reconnect_max": 1.0,
                "tags": [{"name": name, "address": f"hr:{i}", "type": "uint16", "category": "process",
                          "unit": "XX-09"} for i, name in enumerate(DEAD)]}
        sock = tmp_path / "agent.sock"
        data: dict[str, Any] = {
            "site": {"id": "SH-ST-01", "name": "Status test", "licence": "x"},
            "gateway": {"id": f"gw-{uuid.uuid4().hex[:8]}", "key_file": str(tmp_path / "gateway.key")},
            "sources": [sim_source(sim, "modbus", poll_interval=1.0), dead],
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "agent": {"control_socket": str(sock)},
            "uplink": {"mqtt": {"host": host, "port": port, "topic_root": f"bbtest-{uuid.uuid4().hex[:8]}"},
                       "shutdown_grace": 0},
        }
        config, flow = tmp_path / "blackbox.yaml", tmp_path / "blackbox-flow.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        flow.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML in flow style
        generate_key_file(tmp_path / "gateway.key")
        agent = Agent(load_config(config))
        await agent.start()
        try:
            async with asyncio.timeout(30):  # the line's tags read good and FL-01.fill_weight bad
                while not settled((await status_report(agent))["tags"]):
                    await asyncio.sleep(0.1)
            yield Running(config, flow, sock, agent)
        finally:
            await agent.shutdown()


async def blackbox(*args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in a thread (the agent shares this test's event loop)."""
    python = [sys.executable, "-X", "importtime"] if importtime else [sys.executable]
    return await asyncio.to_thread(subprocess.run, [*python, *BLACKBOX[1:], *args], capture_output=True,
                                   text=True, check=False, timeout=60)


def tags_section(stdout: str) -> tuple[str, list[str], list[str]]:
    """The counts line, the tags listed and the lines after them (up to the buffer's), of human status."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tags    "))
    end = next(i for i, line in enumerate(lines) if line.startswith("buffer  "))
    listed = [line.split()[0] for line in lines[start + 1:end] if line.startswith("  ") and not
              line.startswith("  …")]
    notes = [line.strip() for line in lines[start + 1:end] if line.startswith("  …")]
    return lines[start], listed, notes


FIRST_DEAD = DEAD[:ATTENTION_SHOWN - 1]
CASES = [  # arguments, counts line, tags listed (in configured order), notes
    ([], f"tags    {len(ALL)} configured, {len(DEAD)} stale ({len(DEAD)} never read), 1 bad (--all lists every tag)",
     [BAD, *FIRST_DEAD], [f"… and {len(DEAD) + 1 - ATTENTION_SHOWN} more stale or not good: --unit or --tag to "
                          "narrow, --all for every tag"]),
    (["--unit", "XX-09"], f"tags    {len(DEAD)} of {len(ALL)} picked: {len(DEAD)} stale ({len(DEAD)} never read), "
     "0 bad", DEAD, []),
    (["--tag", "FL-01.*"], f"tags    {sum(n.startswith('FL-01.') for n in ALL)} of {len(ALL)} picked: 0 stale, 1 bad",
     [n for n in ALL if n.startswith("FL-01.")], []),
    (["-t", "XX-09.t00?", "--unit=XX-09", "-uWS-01"], f"tags    10 of {len(ALL)} picked: 10 stale (10 never read), "
     "0 bad", DEAD[:10], []),  # a tag must match a pattern and belong to a unit
    (["--all"], f"tags    {len(ALL)} configured, {len(DEAD)} stale ({len(DEAD)} never read), 1 bad", ALL, []),
    (["--tags"], f"tags    {len(ALL)} configured, {len(DEAD)} stale ({len(DEAD)} never read), 1 bad", ALL, []),
]


async def test_the_same_question_within_a_poll_interval_is_answered_from_the_same_tag_list(
        running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked in a loop, status builds its tag list (the costly part) once per poll interval (1 s here)."""
    now = [1_000.0]
    monkeypatch.setattr(status, "clock", lambda: now[0])
    monkeypatch.setattr(status, "_forget", lambda *_: None)  # kept however slow this machine is now
    agent = running.agent
    await status_report(agent)
    built = status._last_built[agent]
    now[0] += 0.9
    await status_report(agent)
    assert status._last_built[agent] is built  # reused: asked again within the interval
    await status_report(agent, {"tags": ["FL-01.*"]})
    narrowed = status._last_built[agent]
    assert narrowed is not built  # another question: built for it
    now[0] += 1.0
    await status_report(agent, {"tags": ["FL-01.*"]})
    assert status._last_built[agent] is not narrowed  # a poll interval later: built again


async def test_a_tag_list_is_let_go_once_it_may_no_longer_answer(
        running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole list is megabytes at 10,000 tags: it is not kept after its poll interval (1 s here)."""
    forget, forgotten = status._forget, asyncio.Event()

    def forget_and_tell(*args: Any) -> None:
        forget(*args)
        forgotten.set()

    monkeypatch.setattr(status, "_forget", forget_and_tell)
    agent = running.agent
    await status_report(agent)
    built = status._last_built[agent]
    async with asyncio.timeout(10):
        await forgotten.wait()  # the agent's loop timer, a poll interval after the list was built
    assert agent not in status._last_built
    await status_report(agent)
    assert status._last_built[agent] is not built  # built afresh


@pytest.mark.parametrize(("args", "counts", "listed", "notes"), CASES)
async def test_status_lists_the_tags_needing_attention_and_what_the_filters_pick(
        running: Running, args: list[str], counts: str, listed: list[str], notes: list[str]) -> None:
    for config in (running.config, running.flow_config):
        done = await blackbox("status", "-c", str(config), *args)
        assert done.returncode == 0, done.stderr
        assert tags_section(done.stdout) == (counts, listed, notes), config.name
        assert "uplink  " in done.stdout and "alarms  " in done.stdout


async def test_status_json_is_complete_and_filters_narrow_it(running: Running) -> None:
    for config in (running.config, running.flow_config):
        printed = (await blackbox("status", "--json", "-c", str(config))).stdout
        st = orjson.loads(printed)
        assert printed == orjson.dumps(st, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()
        assert [t["tag"] for t in st["tags"]] == ALL
        assert st["tag_counts"] == {"configured": len(ALL), "matching": len(ALL), "stale": len(DEAD),
                                    "never_read": len(DEAD), "bad": 1, "uncertain": 0, "attention": len(DEAD) + 1,
                                    "listed": len(ALL)}
        picked = orjson.loads((await blackbox("status", "--json", "-c", str(config), "-u", "FL-01")).stdout)
        assert [t["tag"] for t in picked["tags"]] == [n for n in ALL if n.startswith("FL-01.")]
        assert picked["tag_counts"]["matching"] == len(picked["tags"]) and picked["tag_counts"]["bad"] == 1


async def test_status_shows_each_source_drivers_details(running: Running) -> None:
    """The agent's own counters of a source (learned splits, dropped answers), not only diag's."""
    st = orjson.loads((await blackbox("status", "--json", "-c", str(running.config))).stdout)
    details = {s["name"]: s["details"] for s in st["sources"]}
    sim = next(name for name in details if name != "dead")
    assert any("hr:40" in split for split in details[sim]["splits"])  # learned from the refused FL-01 registers
    assert "dropped_answers" not in details[sim]  # the simulator never answers twice
    report = orjson.loads(orjson.dumps(await status_report(running.agent)))
    report["sources"][0]["details"]["dropped_answers"] = 3
    line = next(x for x in status_text(report).splitlines() if x.startswith(report["sources"][0]["name"]))
    assert line.endswith("3 answers dropped (not awaited)")


@pytest.mark.parametrize(("args", "error"), [
    (["--unit", "NOPE-9"], "no tag belongs to unit(s) NOPE-9"),
    (["--tag", "NOPE-*", "--json"], "no configured tag matches NOPE-*"),
    (["--tag", "XX-09.*", "--unit", "WS-01"], "no tag of unit(s) WS-01 matches XX-09.*"),
])
async def test_status_says_when_a_filter_picks_nothing_configured(running: Running, args: list[str],
                                                                  error: str) -> None:
    for config in (running.config, running.flow_config):
        done = await blackbox("status", "-c", str(config), *args)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.startswith("error: ") and error in done.stderr


SLOW_STDLIB = {"typing", "datetime"}
"""Each a few milliseconds of a command that takes tens (pathlib too, which a development checkout's
editable install imports before any command starts, so that it cannot be told apart here)."""


@pytest.mark.parametrize(("command", "heavy"), [
    (["status"], {"typer", "pydantic", "yaml", "orjson", *SLOW_STDLIB}),
    (["status", "--json"], {"typer", "pydantic", "yaml", "orjson", *SLOW_STDLIB}),  # the agent's text, copied out
    (["tail", "-n", "1", "-t", "WS-01.*"], {"typer", "pydantic", "yaml", "orjson", *SLOW_STDLIB}),
])
async def test_status_and_tail_start_without_typer_when_the_agent_section_reads_quickly(
        running: Running, command: list[str], heavy: set[str]) -> None:
    """Typer validates options through pydantic: a quarter of a second of CPU before anything else;
    orjson takes 15 ms to load, a quarter of plain status's start-up."""
    for config, quick in ((running.config, True), (running.flow_config, False)):
        done = await blackbox(*command, "-c", str(config), importtime=True)
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & heavy if quick else {"typer", "pydantic"} <= imported, config
