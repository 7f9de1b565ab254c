"""Every example in config/ is valid as shipped: ``blackbox config check`` passes on each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parent.parent / "config"
EXAMPLES = sorted(CONFIG.glob("*.yaml"))


def test_there_is_an_example_per_protocol_and_for_the_store() -> None:
    assert {p.name for p in EXAMPLES} >= {"demo.yaml", "cream-line.yaml", "opcua-secure.yaml", "modbus-tcp.yaml",
                                          "modbus-rtu.yaml", "store.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_config_check_passes(example: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "blackbox", "config", "check", str(example)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{example}: OK")
