"""systemd's notify protocol over a real datagram socket, and the unit file checked by systemd itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from services import unavailable

from blackbox import systemd

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNIT = UNITS / "blackbox-agent.service"
STORE_UNIT = UNITS / "blackbox-store@.service"


def test_notify_sends_one_datagram_to_the_socket_systemd_names(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        assert systemd.notify("READY=1\nSTATUS=recording", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(4096) == b"READY=1\nSTATUS=recording"


def test_notify_reaches_an_abstract_socket(tmp_path: Path) -> None:
    name = f"blackbox-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        assert systemd.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(4096) == b"WATCHDOG=1"


def test_without_systemd_notify_does_nothing_and_a_dead_socket_is_reported(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    assert not systemd.notify("READY=1", {})
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert "cannot notify systemd" in caplog.text


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_reloading_message_carries_the_monotonic_time() -> None:
    lines = systemd.reloading_message().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


@pytest.mark.parametrize(("template", "name"), [(UNIT, UNIT.name), (STORE_UNIT, "blackbox-store@2.service")])
def test_the_unit_files_pass_systemd_analyze_verify(tmp_path: Path, template: Path, name: str) -> None:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze (.ci/run installs it)")
    # verify resolves ExecStart: give it an executable at the unit's path, in a scratch root
    root = tmp_path / "root"
    (root / "opt/blackbox/bin").mkdir(parents=True)
    exe = root / "opt/blackbox/bin/blackbox"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / name  # a template is verified as one of its instances
    unit.write_text(template.read_text().replace("/opt/blackbox/bin/blackbox", str(exe)))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          check=False, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if name in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_the_agent_unit_file_has_what_the_agent_relies_on() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=always", "StateDirectory=blackbox",
                 "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes"):
        assert line in text, f"{line} is missing from {UNIT.name}"


def test_the_store_unit_file_has_what_the_store_relies_on() -> None:
    text = STORE_UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=always", "--worker %i",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "SystemCallFilter=@system-service",
                 "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=\n"):
        assert line in text, f"{line!r} is missing from {STORE_UNIT.name}"
