"""``blackbox simulate`` as a service would run it: SIGTERM ends it cleanly, with a last line."""

from __future__ import annotations

import signal
import subprocess
import sys

from waiting import wait_until


def test_sigterm_stops_the_simulator_with_exit_0_and_a_stopped_line() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "blackbox", "--log-level", "INFO", "simulate", "--opcua-port", "0",
                             "--modbus-port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        stderr = proc.stderr
        assert stderr is not None
        lines: list[str] = []

        def serving() -> bool:
            lines.append(stderr.readline())
            return "serving OPC UA" in lines[-1]

        wait_until(serving, 60, "the simulator serving")
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert rest.strip().splitlines()[-1] == "simulator stopped (signal)"
