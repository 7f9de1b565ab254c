"""``blackbox alarms`` against a real control socket served by the rule engine's handlers."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import typer
from pydantic import TypeAdapter
from typer.testing import CliRunner

from blackbox.agent.alarm_commands import handlers as alarm_handlers
from blackbox.agent.control import ControlServer
from blackbox.cli.alarms import parse_duration
from blackbox.cli.main import app
from blackbox.config import Rule, TagConfig
from blackbox.model import Sample, now_us
from blackbox.rules import RuleEngine

CONFIG = """\
site: {{id: S1, name: Site, licence: L-1}}
gateway: {{id: gw-1}}
agent: {{control_socket: {socket}}}
"""


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[RuleEngine, Path]]:
    tags = {n: TagConfig.model_validate({"name": n, "address": "x", "type": "float", "category": "process",
                                         "unit": "EM-01", "eng_unit": "degC", "limits": [{"h": 80}]})
            for n in ("EM-01.temperature", "EM-01.jacket_temperature")}
    rules = [TypeAdapter(Rule).validate_python({"type": "threshold", "tag": n, "priority": "high"}) for n in tags]
    engine = RuleEngine(rules, tags)
    server = ControlServer(tmp_path / "agent.sock")
    for cmd, handler in alarm_handlers(engine).items():
        server.register(cmd, handler)
    await server.start()
    config = tmp_path / "blackbox.yaml"
    config.write_text(CONFIG.format(socket=tmp_path / "agent.sock"))
    try:
        yield engine, config
    finally:
        await server.stop()


async def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in a thread (it blocks on the socket) while this loop serves the agent's side."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.output


async def test_list_ack_shelve_unshelve_top_through_the_socket(agent: tuple[RuleEngine, Path]) -> None:
    engine, config = agent
    c = str(config)
    code, out = await cli("alarms", "-c", c)
    assert (code, out.strip()) == (0, "(no alarms)")
    engine.evaluate([Sample("EM-01.temperature", 85.5)], now_us(), "emulsify", "FC-050")

    code, out = await cli("alarms", "-c", c)
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:6] == ["threshold:EM-01.temperature", "H", "active_unacknowledged", "high", "85.5", "degC"]

    code, out = await cli("alarms", "ack", "threshold:EM-01.temperature", "-c", c, "--user", "wang.fang")
    assert (code, out.strip()) == (0, "acknowledged threshold:EM-01.temperature (now active_acknowledged)")
    account = getpass.getuser()
    who = "wang.fang" if account == "wang.fang" else f"wang.fang (os:{account})"
    (ack,) = engine.tick(now_us(), "emulsify", "FC-050")
    assert (ack.type, ack.data["user"]) == ("alarm.acknowledged", who)

    code, out = await cli("alarms", "ack", "threshold:EM-01.temperature", "-c", c)
    assert code == 1 and "nothing to acknowledge" in out

    code, out = await cli("alarms", "shelve", "EM-01.temperature", "--for", "1h30m", "--reason", "probe swap",
                          "-c", c, "-u", "li.ming")
    assert code == 0 and "now shelved" in out
    (shelved,) = engine.tick(now_us(), "emulsify", "FC-050")
    assert shelved.data["until_us"] - shelved.ts_us == pytest.approx(5400 * 1_000_000, abs=1_000_000)
    assert shelved.data["reason"] == "probe swap"

    code, out = await cli("alarms", "list", "-c", c, "--json")
    assert code == 0 and '"shelved_by"' in out and "li.ming" in out
    code, out = await cli("alarms", "unshelve", "threshold:EM-01.temperature", "-c", c)
    assert code == 0 and "now active_unacknowledged" in out  # still in alarm: annunciated again

    code, out = await cli("alarms", "top", "-c", c)
    assert code == 0
    assert out.splitlines()[1].split() == ["1", "threshold:EM-01.temperature", "high"]

    code, out = await cli("alarms", "ack", "threshold:NOPE", "-c", c)
    assert code == 1 and "no alarm 'threshold:NOPE'" in out


async def test_out_of_service_needs_a_reason_and_the_agent(agent: tuple[RuleEngine, Path], tmp_path: Path) -> None:
    engine, config = agent
    code, out = await cli("alarms", "out-of-service", "EM-01.jacket_temperature", "-c", str(config))
    assert code == 2 and "--reason" in out
    code, out = await cli("alarms", "out-of-service", "EM-01.jacket_temperature", "--reason", "spare", "-c",
                          str(config))
    assert code == 0 and "out_of_service" in out
    assert engine.entries["threshold:EM-01.jacket_temperature"].alarm.out_of_service
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.format(socket=tmp_path / "none.sock"))
    code, out = await cli("alarms", "-c", str(other))
    assert code == 1 and "no agent is running" in out


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("1h30m", 5400), ("0.5h", 1800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "-5m", "1d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)
