"""The agent's configuration parsed in a forked child (the parse's garbage never enters the agent),
and only the drivers a configuration uses imported.

Each check runs in a fresh interpreter: the forked loader forks only a single-threaded process
(pytest's workers have threads), and which modules a load imports is only visible in a process
that had not imported them before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 120


def config_text(modbus_tags: int, opcua: bool = False, broken: bool = False) -> str:
    lines = ["site: {id: S1, name: Site, licence: L-1}", "gateway: {id: gw-1, key_file: gateway.key}", "sources:",
             "  - name: plc", "    protocol: modbus", "    host: 127.0.0.1", "    port: 5020", "    tags:"]
    lines += [f"      - {{name: T{i:05d}, address: 'hr:{2 * i}', type: float32, category: process, unit: U1}}"
              for i in range(modbus_tags)]
    if broken:
        lines.append("      - {name: T00000, address: 'hr:0', type: float32, category: process, unit: U1}")
    if opcua:
        lines += ["  - name: em", "    protocol: opcua", "    endpoint: opc.tcp://127.0.0.1:4840", "    tags:",
                  "      - {name: EM-01.temp, address: 's=EM-01.temp', type: Double, category: process, unit: U1}"]
    return "\n".join(lines) + "\n"


def run_python(code: str, *args: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON document."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


PEAKS = """
import json, sys, tracemalloc
from blackbox.config import load_config, load_config_forked
path = sys.argv[1]
load_config(path)  # imports done before measuring
tracemalloc.start()
forked = load_config_forked(path)
forked_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
here = load_config(path)
here_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"equal": forked == here, "forked_peak": forked_peak, "here_peak": here_peak,
                  "tags": len(forked.config.sources[0].tags), "sha_equal": forked.sha256 == here.sha256}))
"""


def test_the_forked_load_gives_the_same_configuration_without_the_parse_in_this_process(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yaml"
    path.write_text(config_text(2000))
    out = run_python(PEAKS, str(path))
    assert out["tags"] == 2000
    assert out["equal"] is True and out["sha_equal"] is True
    # parsed here, the YAML node graph and the raw document peak at several times the models
    forked_peak, here_peak = out["forked_peak"], out["here_peak"]
    assert isinstance(forked_peak, int) and isinstance(here_peak, int)
    assert forked_peak * 2 < here_peak, (forked_peak, here_peak)


ISSUES = """
import json, sys
from blackbox.config import ConfigError, load_config, load_config_forked
out = {}
for name, load in (("forked", load_config_forked), ("here", load_config)):
    try:
        load(sys.argv[1])
        out[name] = None
    except ConfigError as exc:
        out[name] = [str(i) for i in exc.issues]
print(json.dumps(out))
"""


def test_a_broken_configuration_reports_the_same_issues_when_forked(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yaml"
    path.write_text(config_text(3, broken=True))
    out = run_python(ISSUES, str(path))
    here = out["here"]
    assert isinstance(here, list) and here, out
    assert out["forked"] == here
    assert any("duplicate tag name 'T00000'" in issue for issue in here)


MODULES = """
import json, sys
from blackbox.config import load_config
load_config(sys.argv[1])
print(json.dumps({m: m in sys.modules for m in ("asyncua", "pymodbus", "drivers.opcua", "drivers.modbus")}))
"""


def test_a_modbus_only_configuration_does_not_import_the_opcua_stack(tmp_path: Path) -> None:
    """Nor pymodbus, for Modbus TCP: only a serial line uses its client."""
    path = tmp_path / "modbus.yaml"
    path.write_text(config_text(3))
    assert run_python(MODULES, str(path)) == {"asyncua": False, "pymodbus": False, "drivers.opcua": False,
                                              "drivers.modbus": True}
    both = tmp_path / "both.yaml"
    both.write_text(config_text(3, opcua=True))
    assert run_python(MODULES, str(both)) == {"asyncua": True, "pymodbus": False, "drivers.opcua": True,
                                              "drivers.modbus": True}


AGENT_MODULES = """
import json, sys
import blackbox.agent.runtime, blackbox.cli.agent_run
print(json.dumps({m: m in sys.modules for m in ("msgspec", "blackbox.seal.fast_records", "sqlalchemy", "alembic")}))
"""


def test_the_agent_loads_none_of_the_stores_readers() -> None:
    """The fast records reader (msgspec) decodes batches in the store; a gateway that only seals
    them loads it only to check a key rotation. Nor SQLAlchemy or Alembic: only an upgrade uses them."""
    assert run_python(AGENT_MODULES) == dict.fromkeys(
        ("msgspec", "blackbox.seal.fast_records", "sqlalchemy", "alembic"), False)
