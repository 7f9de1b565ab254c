"""The commands that talk to the agent find its control socket from the ``agent:`` section alone,
and leave anything they cannot be sure of to the full validation (which reports it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blackbox.cli.agent_socket import DEFAULT_SOCKET, quick_control_socket
from blackbox.cli.entry import LIGHT, command_of
from blackbox.config.agent import AgentConfig

HEAD = "site: {id: S1}\ngateway:\n  id: gw-1\n  key_file: gateway.key\n"


@pytest.mark.parametrize(("text", "expected"), [
    (HEAD + "agent:\n  control_socket: /run/blackbox/agent.sock\n", "/run/blackbox/agent.sock"),
    (HEAD + "agent:\n  # where\n  control_socket: run/a.sock  # relative: to the file's folder\n"
            "  metrics_port: 9100\nsources: []\n", "{dir}/run/a.sock"),
    (HEAD + "agent: {control_socket: x.sock}\n", "{dir}/x.sock"),
    (HEAD + "agent:\n  metrics_port: 9100\n", "{dir}/var/agent.sock"),  # the default
    (HEAD + "sources: []\n", "{dir}/var/agent.sock"),  # no agent section: the default
    (HEAD + "sources:\n- name: PLC-1\n  tags:\n  - name: T\n-\n  name: PLC-2\nagent:\n  control_socket: /a.sock\n",
     "/a.sock"),  # list items at their key's indentation
    (HEAD + "agent:\n  control_socket: a.sock\n  control_socket: b.sock\n", "{dir}/b.sock"),  # as YAML reads it
    (HEAD + "agent:\n  metrics_port: 1\n  control_socket: /s/a.sock   # comment\nbuffer: {}\n", "/s/a.sock"),
    ("# comment\n" + HEAD + "agent:\n\n  control_socket: 'a b.sock'\n", "{dir}/a b.sock"),
    ((HEAD + "agent:\n  control_socket: /w.sock\nsources:\n- name: P\n").replace("\n", "\r\n"), "/w.sock"),  # Windows
    ("site:\n  id: S1\ngateway:\n  id: g\n", "{dir}/var/agent.sock"),  # the first line is a key
    # not sure: the full validation decides (and says what is wrong)
    (HEAD + "agent:\n  control_socket: [a]\n", None),
    (HEAD + "agent:\n  control_socket: *ref\n", None),  # an alias to elsewhere
    (HEAD + "agent: 5\n", None),
    (HEAD + "agent:\n  control_socket: ''\n", None),
    (HEAD + "agent:\n  control_socket: a\nagent:\n  control_socket: b\n", None),  # twice
    ("gateway: {id: gw-1}\nagent:\n  control_socket: /a.sock\n", None),  # no site: not a gateway file
    ("{site: {id: S1}, gateway: {id: g}, agent: {control_socket: /a.sock}}\n", None),  # flow style
    ("---\n" + HEAD, None),
    ("store:\n  database_url: sqlite:///s.sqlite\n", None),
    ("site: [unclosed\ngateway: {id: g}\n", "{dir}/var/agent.sock"),  # not our section's problem: the agent's
])
def test_the_control_socket_is_read_from_the_agent_section_alone(tmp_path: Path, text: str,
                                                                 expected: str | None) -> None:
    path = tmp_path / "blackbox.yaml"
    path.write_text(text)
    got = quick_control_socket(path)
    assert (None if got is None else str(got)) == (None if expected is None else expected.format(dir=tmp_path))


def test_an_unreadable_file_is_left_to_the_full_validation(tmp_path: Path) -> None:
    assert quick_control_socket(tmp_path / "missing.yaml") is None
    assert quick_control_socket(tmp_path) is None  # a folder


def test_the_default_socket_is_the_configuration_models_default() -> None:
    assert AgentConfig().control_socket == Path(DEFAULT_SOCKET)


@pytest.mark.parametrize(("args", "command"), [
    (["status", "-c", "x"], "status"),
    (["--log-level", "DEBUG", "tail"], "tail"),
    (["--log-level=debug", "--debug", "status"], "status"),
    (["--help", "status"], None),  # the whole application's help
    (["--version"], None),
    ([], None),
    (["alarms", "list"], "alarms"),
])
def test_the_entry_point_picks_the_command(args: list[str], command: str | None) -> None:
    assert command_of(args) == command


def test_the_light_commands_are_those_of_the_light_application() -> None:
    """In a process of its own: importing the full application adds its commands to the same object."""
    names = subprocess.run([sys.executable, "-c", "from blackbox.cli.root import app; "
                            "print(' '.join(sorted(c.name or '' for c in app.registered_commands)))"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert set(names) == LIGHT
