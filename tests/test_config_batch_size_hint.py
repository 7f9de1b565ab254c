"""``blackbox config check`` advises larger batches when one holds less than half a second of the line.

The demo line has 42 tags polled every 0.1 s: 420 readings/s, so half a second is 210 readings. The
expected lines below are worked out by hand from that, not by the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
ADVICE = "(see 'Sizing batches for a large line' in the operations guide)"

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("the demo as shipped: 5,000 records is about 12 s of the line", {"max_age": 1.0}, None),
    ("100 records hold 238 ms", {"max_age": 1.0, "max_records": 100},
     "hint: seal: a batch of at most 100 readings holds 238 ms of this line's 420 readings/s; a line this size is "
     "stored more cheaply with seal.max_records: 210 and seal.max_bytes: 23100 " + ADVICE),
    ("300 records are more than half a second", {"max_age": 1.0, "max_records": 300}, None),
    ("the byte cap cuts first: 11,000 bytes are 100 readings", {"max_age": 1.0, "max_bytes": 11_000},
     "hint: seal: a batch of at most 100 readings holds 238 ms of this line's 420 readings/s; a line this size is "
     "stored more cheaply with seal.max_records: 210 and seal.max_bytes: 23100 " + ADVICE),
    ("sealed every 0.2 s anyway: 84 readings suffice", {"max_age": 0.2, "max_records": 90}, None),
    ("sealed every 0.2 s, 50 records", {"max_age": 0.2, "max_records": 50},
     "hint: seal: a batch of at most 50 readings holds 119 ms of this line's 420 readings/s; a line this size is "
     "stored more cheaply with seal.max_records: 84 and seal.max_bytes: 9240 " + ADVICE),
]


@pytest.mark.parametrize(("seal", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_check_advises_on_batch_size(tmp_path: Path, seal: dict[str, Any], expected: str | None) -> None:
    document = yaml.safe_load(DEMO.read_text())
    document["seal"] = seal
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump(document))
    proc = subprocess.run([sys.executable, "-m", "blackbox", "config", "check", str(config)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hints = [line for line in proc.stdout.splitlines() if line.startswith("hint:")]
    assert hints == ([] if expected is None else [expected])
