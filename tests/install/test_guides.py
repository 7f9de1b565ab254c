"""The install guides work as written: tests/install/run_guide.py follows docs/install-store.md and
docs/install-gateway.md on this machine (sandboxed paths, throwaway accounts, the simulator as the
PLC) and ends with a verified trace of a batch. A broken step fails here with its guide line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from services import unavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_install_guides_end_with_a_verified_trace() -> None:
    if os.geteuid() != 0:
        unavailable("root (the guides create accounts and services)")
    for tool in ("/usr/sbin/mosquitto", "mosquitto_passwd", "openssl", "psql", "runuser", "useradd"):
        if shutil.which(tool) is None and not Path(tool).exists():
            unavailable(f"{tool}, which the guides use")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "install" / "run_guide.py"),
                           str(REPO / "docs" / "install-store.md"), str(REPO / "docs" / "install-gateway.md")],
                          capture_output=True, text=True, check=False, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert "integrity verified" in proc.stdout
