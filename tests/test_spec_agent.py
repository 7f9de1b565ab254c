"""The agent enforces joint control: limits only from a specification both parties approved.

A real agent (real buffer file, real broker) with one Modbus source nobody answers: nothing is read,
which does not matter here — what is checked is which limits and rules are in force and what the
record says about them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_helpers import BLACKBOX, agent_status, events_of
from services import require_mosquitto
from spec_support import TAMPERED, Approvers, spec_doc, tampered, write_spec
from waiting import eventually

from blackbox.agent.runtime import Agent
from blackbox.agent.status import status_report
from blackbox.broker import free_port
from blackbox.config import load_config
from blackbox.seal import generate_key_file

CONFIG_HH = 99.0
"""The limit the gateway's own configuration sets (what root could edit)."""


def config(tmp: Path, spec: dict[str, Any] | None) -> dict[str, Any]:
    tag = {"name": "EM-01.temperature", "address": "hr:0", "type": "float32", "category": "process",
           "unit": "EM-01", "eng_unit": "degC", "limits": [{"phases": ["emulsify"], "h": 80.0, "hh": CONFIG_HH}]}
    data: dict[str, Any] = {
        "site": {"id": "SH-JC-01", "name": "Joint control test", "licence": "x"},
        "gateway": {"id": f"gw-{uuid.uuid4().hex[:8]}", "key_file": str(tmp / "gateway.key")},
        "sources": [{"name": "plc", "protocol": "modbus", "host": "127.0.0.1", "port": free_port(),
                     "poll_interval": 0.5, "timeout": 0.2, "tags": [tag]}],
        "rules": [{"type": "threshold", "tag": "EM-01.temperature", "deadband": 5.0},
                  {"type": "stale", "tag": "EM-01.temperature", "intervals": 3}],
        "buffer": {"path": str(tmp / "buffer.sqlite")},
        "agent": {"control_socket": str(tmp / "agent.sock")},
        "uplink": {"mqtt": {"topic_root": f"bbtest-{uuid.uuid4().hex[:8]}"}, "shutdown_grace": 0},
    }
    if spec is not None:
        data["specification"] = spec
    return data


def write_config(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "blackbox.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class Line:
    """A gateway directory: config, approver keys, specification files."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.approvers = Approvers()
        self.spec_path = tmp / "FC-050.yaml"
        self.section = {"files": [str(self.spec_path)], **self.approvers.write_public(tmp)}
        self.config_path = write_config(tmp, config(tmp, self.section))
        generate_key_file(tmp / "gateway.key")

    def approve(self, doc: dict[str, Any]) -> None:
        write_spec(self.spec_path, doc, self.approvers.signatures(doc))

    def agent(self) -> Agent:
        return Agent(load_config(self.config_path))


def hh(agent: Agent) -> float | None:
    [limits] = agent.effective.tag_index()["EM-01.temperature"].limits
    return limits.hh


def rule_types(agent: Agent) -> list[str]:
    return sorted(r.type for r in agent.effective.rules)


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    yield Line(tmp_path)


async def started(line: Line) -> Agent:
    agent = line.agent()
    await agent.start()
    return agent


async def test_an_approved_specification_is_in_force_and_recorded(line: Line) -> None:
    line.approve(spec_doc(hh=85.0))
    agent = await started(line)
    try:
        assert hh(agent) == 85.0  # the specification's, not the configuration's 99
        assert rule_types(agent) == ["stale", "threshold"]  # the spec's threshold + the config's signal health
        [threshold] = [r for r in agent.effective.rules if r.type == "threshold"]
        assert threshold.deadband == 0.2  # the specification's rule parameters
        status = (await status_report(agent))["specification"]
        assert status["approved"] and status["specifications"][0]["sha256"] == agent.in_force.specs[0].sha256
    finally:
        await agent.shutdown()
    [applied] = events_of(line.tmp / "buffer.sqlite", "spec.applied")
    assert applied["data"]["document"] == spec_doc(hh=85.0)
    assert {s["role"] for s in applied["data"]["signatures"]["signatures"]} == {"qa", "regulator"}
    [cfg] = events_of(line.tmp / "buffer.sqlite", "config.applied")
    spec = cfg["data"]["specification"]
    assert spec["approved"] is True and spec["specifications"][0]["version"] == 1
    assert cfg["data"]["tags"][0]["limits"][0]["hh"] == 85.0


@pytest.mark.parametrize("how", TAMPERED)
async def test_a_reload_without_both_approvals_is_refused_and_recorded(line: Line, how: str) -> None:
    line.approve(spec_doc(hh=85.0))
    agent = await started(line)
    try:
        doc, sigs = tampered(line.approvers, how, spec_doc(version=2, hh=95.0, reason="loosen HH"))
        write_spec(line.spec_path, doc, sigs)
        assert await agent.reload() is False
        assert hh(agent) == 85.0  # still the last approved specification
        assert agent.in_force.specs[0].spec.version == 1
    finally:
        await agent.shutdown()
    [refused] = events_of(line.tmp / "buffer.sqlite", "spec.refused")
    d = refused["data"]
    assert d["when"] == "reload" and d["file"] == str(line.spec_path)
    assert d["file_owner_uid"] == os.getuid() and d["agent_pid"] == os.getpid()
    assert d["attempted"] == {"id": "FC-050", "product": "FC-050", "version": 2}
    new_hh = 86.0 if how == "one_byte_changed" else 95.0
    assert {"path": "parameters.EM-01.temperature[emulsify].hh", "old": 85.0, "new": new_hh} in d["changes"]
    assert [s["version"] for s in d["in_force"]] == [1]
    assert len(events_of(line.tmp / "buffer.sqlite", "config.applied")) == 1  # nothing else was applied


async def test_an_approved_change_is_applied_on_reload(line: Line) -> None:
    line.approve(spec_doc(hh=85.0))
    agent = await started(line)
    try:
        line.approve(spec_doc(version=2, hh=84.0, reason="tighten HH after CAPA-17"))
        assert await agent.reload() is True
        assert hh(agent) == 84.0
    finally:
        await agent.shutdown()
    assert [e["data"]["version"] for e in events_of(line.tmp / "buffer.sqlite", "spec.applied")] == [1, 2]


async def test_removing_the_specification_or_changing_pins_on_reload_is_refused(line: Line) -> None:
    line.approve(spec_doc(hh=85.0))
    agent = await started(line)
    try:
        write_config(line.tmp, config(line.tmp, None))
        assert await agent.reload() is False
        assert hh(agent) == 85.0
        other = Approvers()
        (line.tmp / "other").mkdir()
        section = {"files": [str(line.spec_path)], **other.write_public(line.tmp / "other")}
        write_spec(line.spec_path, spec_doc(version=2, hh=95.0), other.signatures(spec_doc(version=2, hh=95.0)))
        write_config(line.tmp, config(line.tmp, section) | {"gateway": agent.cfg.gateway.model_dump(mode="json")})
        assert await agent.reload() is False
        assert hh(agent) == 85.0
    finally:
        await agent.shutdown()
    reasons = [e["data"]["reason"] for e in events_of(line.tmp / "buffer.sqlite", "spec.refused")]
    assert "names no specification" in reasons[0] and "pinned" in reasons[1]


@pytest.mark.parametrize("how", TAMPERED)
async def test_a_line_without_an_approved_specification_runs_unapproved(line: Line, how: str) -> None:
    doc, sigs = tampered(line.approvers, how, spec_doc(hh=85.0))
    write_spec(line.spec_path, doc, sigs)
    agent = await started(line)
    try:
        assert not agent.in_force.approved
        assert hh(agent) == CONFIG_HH  # the configured limits
    finally:
        await agent.shutdown()
    [refused] = events_of(line.tmp / "buffer.sqlite", "spec.refused")
    assert refused["data"]["when"] == "start"
    [cfg] = events_of(line.tmp / "buffer.sqlite", "config.applied")
    assert cfg["data"]["specification"] == {"approved": False, "specifications": []}


async def test_a_restart_with_a_spoilt_specification_keeps_the_last_approved_one(line: Line) -> None:
    line.approve(spec_doc(hh=85.0))
    agent = await started(line)
    await agent.shutdown()
    doc, sigs = tampered(line.approvers, "one_signature", spec_doc(version=2, hh=95.0))
    write_spec(line.spec_path, doc, sigs)
    agent = await started(line)
    try:
        assert agent.in_force.approved and hh(agent) == 85.0
    finally:
        await agent.shutdown()
    [refused] = events_of(line.tmp / "buffer.sqlite", "spec.refused")
    assert "no valid regulator signature" in refused["data"]["reason"]
    assert [e["data"]["version"] for e in events_of(line.tmp / "buffer.sqlite", "spec.applied")] == [1, 1]


@pytest.mark.parametrize("how", [None, *TAMPERED])
def test_config_check_says_whether_the_agent_would_accept_the_specification(tmp_path: Path, how: str | None) -> None:
    line = Line(tmp_path)
    if how is None:
        line.approve(spec_doc())
    else:
        write_spec(line.spec_path, *tampered(line.approvers, how, spec_doc()))
    proc = subprocess.run([sys.executable, "-m", "blackbox", "config", "check", str(line.config_path)],
                          capture_output=True, text=True, check=False, timeout=60)
    if how is None:
        assert proc.returncode == 0, proc.stderr
        assert "specification FC-050 v1" in proc.stdout and "approved by factory QA Li Wei" in proc.stdout
    else:
        assert proc.returncode == 2
        assert "the agent would refuse the specification" in proc.stderr


async def test_sighup_with_a_spoilt_specification_is_refused_by_the_running_process(tmp_path: Path) -> None:
    """The real thing: ``blackbox run``, a specification edited without the regulator, SIGHUP."""
    host, port = require_mosquitto()
    line = Line(tmp_path)
    line.approve(spec_doc(hh=85.0))
    data = yaml.safe_load(line.config_path.read_text(encoding="utf-8"))
    data["uplink"]["mqtt"] |= {"host": host, "port": port}
    line.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    log = tmp_path / "agent.log"
    proc = subprocess.Popen([*BLACKBOX, "run", "-c", str(line.config_path)], stderr=log.open("w"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sock = tmp_path / "agent.sock"
    try:
        await eventually(lambda: (st := agent_status(sock)) and st["specification"]["approved"], 60,
                         "the agent under the approved specification")
        doc, sigs = tampered(line.approvers, "one_signature", spec_doc(version=2, hh=95.0, reason="loosen HH"))
        write_spec(line.spec_path, doc, sigs)
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "configuration reload refused" in log.read_text(), 20, "the reload refused")
        st = agent_status(sock)
        assert st is not None and [s["version"] for s in st["specification"]["specifications"]] == [1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    [refused] = events_of(tmp_path / "buffer.sqlite", "spec.refused")
    assert "no valid regulator signature" in refused["data"]["reason"]
    assert refused["data"]["agent_pid"] == proc.pid
