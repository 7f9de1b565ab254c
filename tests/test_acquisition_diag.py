"""``blackbox diag``: the engineer's commands, run as a process against the simulated line."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from blackbox.sim import Simulator

DEMO = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
NS = "urn:blackbox:sim:cream-line"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=0, opcua_port=0, modbus_port=0) as simulator:
        await simulator.advance(4 * 3600)  # in production: batch, phase and process values set
        yield simulator


async def blackbox(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a child process while this loop keeps serving the simulator."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "blackbox", "--log-level", "ERROR", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(sim: Simulator, tmp_path: Path, name: str, extra_sources: Sequence[dict[str, Any]] = ()) -> Path:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    for source in data["sources"]:
        if source["protocol"] == "opcua":
            source["endpoint"] = sim.opcua_endpoint
        else:
            source["port"] = sim.modbus_port
    data["sources"] += list(extra_sources)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def test_diag_sources_and_plan(sim: Simulator, tmp_path: Path) -> None:
    dead = {"name": "dead-plc", "protocol": "modbus", "host": "127.0.0.1", "port": closed_port(), "timeout": 0.5,
            "tags": [{"name": "X-01.t", "address": "hr:0", "type": "int16", "category": "process", "unit": "X-01"}]}
    config = demo_config(sim, tmp_path, "with-dead-plc.yaml", [dead])
    code, out, err = await blackbox("diag", "sources", "-c", str(config), "--json")
    assert code == 1, err  # one source is unreachable
    by_name = {r["source"]: r for r in json.loads(out)}
    assert by_name["line-opcua"]["reachable"] and by_name["line-opcua"]["good"] == 15
    assert by_name["line-modbus"]["reachable"] and by_name["line-modbus"]["good"] == 27
    assert by_name["line-modbus"]["requests"] == 4 and by_name["line-modbus"]["round_trip_ms"] > 0
    assert not by_name["dead-plc"]["reachable"] and "cannot connect" in by_name["dead-plc"]["last_error"]

    code, out, err = await blackbox("diag", "plan", "-c", str(demo_config(sim, tmp_path, "demo.yaml")), "--json")
    assert code == 0, err
    plans = {p["source"]: p for p in json.loads(out)}
    modbus = [(r["table"], r["start"], r["count"]) for r in plans["line-modbus"]["requests"]]
    assert modbus == [("hr", 0, 45), ("ir", 0, 36), ("co", 0, 2), ("di", 0, 1)]
    assert plans["line-opcua"]["reads_per_cycle"] == 1 and plans["line-opcua"]["nodes"] == 15

    code, out, _ = await blackbox("diag", "plan", "-c", str(config))
    assert code == 0 and "unit 1 hr:0-44" in out and "dead-plc" in out  # offline: no connection needed


@pytest.mark.slow
async def test_diag_opcua_and_modbus_reads(sim: Simulator) -> None:
    url = sim.opcua_endpoint
    code, out, err = await blackbox("diag", "opcua", "read", url, f"nsu={NS};s=EM-01.phase",
                                    f"nsu={NS};s=EM-01.temperature", "--json")
    assert code == 0, err
    phase, temperature = json.loads(out)
    assert (phase["value"], phase["type"], phase["status"]) == (sim.phase, "String", "Good")
    assert temperature["value"] == sim.snapshot["EM-01.temperature"] and temperature["source_timestamp"]

    code, out, _ = await blackbox("diag", "opcua", "read", url, f"nsu={NS};s=EM-01.nope")
    assert code == 1 and "BadNodeIdUnknown" in out

    code, out, err = await blackbox("diag", "opcua", "browse", url, f"nsu={NS};s=EM-01")
    assert code == 0, err
    assert f"nsu={NS};s=EM-01.temperature" in out and "Variable" in out

    code, out, err = await blackbox("diag", "modbus", "read", f"127.0.0.1:{sim.modbus_port}", "--unit", "1",
                                    "--address", "ir:30", "--count", "3", "--type", "float32", "--order", "ABCD",
                                    "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["address"] for r in rows] == ["ir:30", "ir:32", "ir:34"]
    for row, tag in zip(rows, ["CR-01.temperature", "CR-01.humidity", "CR-01.differential_pressure"], strict=True):
        assert row["value"] == pytest.approx(sim.snapshot[tag], rel=1e-6)
        assert len(repr(row["value"])) <= 10  # the float32's shortest decimal, not its binary expansion

    code, _, err = await blackbox("diag", "modbus", "read", f"127.0.0.1:{sim.modbus_port}", "--address", "hr:100")
    assert code == 1 and "ILLEGAL_ADDRESS" in err
    code, _, err = await blackbox("diag", "modbus", "read", "127.0.0.1", "--address", "hr:0", "--type", "real")
    assert code == 2 and "float32" in err


async def test_diag_opcua_browse_shows_a_bad_node_and_exits_1(sim: Simulator) -> None:
    from blackbox.sim.faults import BadQuality

    sim.faults.add(BadQuality(tag="EM-01.temperature"))
    await sim.advance(60)
    code, out, err = await blackbox("diag", "opcua", "browse", sim.opcua_endpoint, f"nsu={NS};s=EM-01", "--json")
    assert code == 1, err
    nodes = {c["node_id"].rpartition(";s=")[2]: c for c in json.loads(out)}
    # the declared type, not the Null of a value-less bad DataValue; the status, not silence
    assert (nodes["EM-01.temperature"]["type"], nodes["EM-01.temperature"]["status"]) == ("Double", "BadSensorFailure")
    assert nodes["EM-01.phase"]["status"] == "Good"
    code, out, err = await blackbox("diag", "opcua", "browse", sim.opcua_endpoint, f"nsu={NS};s=EM-01")
    assert code == 1 and "BadSensorFailure" in out.split("EM-01.temperature", 1)[1].splitlines()[0]
    code, _, err = await blackbox("diag", "opcua", "browse", sim.opcua_endpoint, f"nsu={NS};s=EM-01.nope")
    assert code == 1 and "BadNodeIdUnknown" in err
