"""Signing from the command line against a running agent process: the password is read from the
terminal (here: stdin, the CLI has no controlling terminal), never an argument; a wrong one records
nothing; the signature lands in the record with the printed name."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agent_helpers import BLACKBOX, agent_status, cli, events_of
from services import require_mosquitto
from waiting import wait_until


def blackbox_with_password(*args: str, password_lines: str) -> subprocess.CompletedProcess[str]:
    """The CLI without a controlling terminal, so that getpass reads the password from stdin."""
    return subprocess.run([*BLACKBOX, *args], input=password_lines, capture_output=True, text=True, check=False,
                          timeout=60, start_new_session=True)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    host, port = require_mosquitto()
    config = tmp_path / "bb.yaml"
    config.write_text(yaml.safe_dump({
        "site": {"id": "SITE-H9", "name": "Test", "licence": "X", "line": "L1"},
        "gateway": {"id": f"gw-{uuid.uuid4().hex[:8]}", "key_file": "gateway.key"},
        "uplink": {"mqtt": {"host": host, "port": port, "topic_root": f"t-{uuid.uuid4().hex[:8]}"}},
        "record": {"operators_file": "operators.json"}}))
    cli("keys", "init", "-c", str(config))
    proc = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)], stderr=(tmp_path / "agent.log").open("w"))
    try:
        wait_until(lambda: agent_status(tmp_path / "var" / "agent.sock"), 60, "the agent's control socket")
        yield str(config), tmp_path / "var" / "buffer.sqlite"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_cli_signs_with_a_password_read_from_the_terminal(agent: tuple[str, Path]) -> None:
    config, buffer = agent
    added = blackbox_with_password("operator", "add", "zhang.wei", "--name", "Zhang Wei", "--role", "operator",
                                   "-c", config, password_lines="s3cret-pass\ns3cret-pass\n")
    assert added.returncode == 0, added.stderr
    start = ("batch", "start", "B-CLI-1", "--product", "FC-050", "-c", config)
    unsigned = blackbox_with_password(*start, password_lines="")
    assert unsigned.returncode == 1 and "must be signed" in unsigned.stderr
    wrong = blackbox_with_password(*start, "--sign", "zhang.wei", password_lines="guess\n")
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr
    assert events_of(buffer, "batch.started") == []
    right = blackbox_with_password(*start, "--sign", "zhang.wei", password_lines="s3cret-pass\n")
    assert right.returncode == 0, right.stderr
    (started,) = events_of(buffer, "batch.started")
    (sig,) = started["data"]["signatures"]
    assert (sig["user"], sig["name"], sig["meaning"]) == ("zhang.wei", "Zhang Wei", "performed")
    assert "s3cret-pass" not in str(events_of(buffer))
    listed = cli("operator", "list", "-c", config).stdout
    assert "zhang.wei" in listed and "1 failed attempt" not in listed  # a success resets the count
