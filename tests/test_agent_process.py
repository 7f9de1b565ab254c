"""The agent as systemd runs it: a real process against the simulator and the machine's Mosquitto,
driven through its command line: systemd notifications on a real datagram socket, ``status``,
``tail``, operator entries, the metrics endpoint, SIGHUP reloads and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from agent_helpers import BLACKBOX, NotifySocket, agent_status, cli, edit_config, events_of, mqtt_settings
from services import free_port_block, require_mosquitto
from waiting import eventually

from blackbox.demo import DEMO_CONFIG, write_config
from blackbox.sim import Simulator

BATCH = "B-OPS-0001"


async def http_get(port: int, target: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.0\r\n\r\n".encode())
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


async def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the simulator shares this test's event loop and must keep serving."""
    return await asyncio.to_thread(cli, *args, check=check)


@pytest.mark.slow
async def test_a_running_agent_answers_status_tail_operators_metrics_reload_and_stops_cleanly(tmp_path: Path) -> None:
    host, port = require_mosquitto()
    metrics_port = free_port_block(1)  # outside the ephemeral range: no client connection takes it meanwhile
    async with Simulator(seed=3, speed=60, opcua_port=0, modbus_port=0) as sim:
        config = write_config(DEMO_CONFIG, tmp_path, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port,
                              mqtt=mqtt_settings(host, port), database_url=f"sqlite:///{tmp_path / 'store.sqlite'}")

        def operator_context(data: dict[str, Any]) -> None:  # no PLC tags for batch and phase: operators set them
            data["context"] = {k: v for k, v in data["context"].items() if not k.endswith("_tag")}
            data["agent"]["metrics_port"] = metrics_port

        edit_config(config, operator_context)
        c = str(config)
        await run_cli("keys", "init", "-c", c)
        notify = NotifySocket(tmp_path / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000", "PYTHONUNBUFFERED": "1"}
        log = tmp_path / "agent.log"
        agent = subprocess.Popen([*BLACKBOX, "run", "-c", c], env=env, stderr=log.open("w"))
        sock = tmp_path / "agent.sock"
        try:
            await eventually(lambda: notify.count("READY=1"), 60, "READY=1 from the agent")
            await eventually(lambda: notify.count("WATCHDOG=1") >= 3, 10, "the agent to ping the watchdog")
            await eventually(lambda: (st := agent_status(sock)) and all(s["connected"] for s in st["sources"])
                           and st["uplink"]["connected"], 30, "both sources and the uplink")

            # -- operator entries, recorded with who entered them --------------------------------
            out = (await run_cli("batch", "start", BATCH, "--product", "FC-050", "--recipe", "R-FC-050",
                                 "--recipe-version", "3", "--phase", "dispense", "--operator", "zhang.wei",
                                 "-c", c)).stdout
            assert "recorded batch.started as seq" in out and "recorded batch.phase" in out
            refused = await run_cli("batch", "start", "B-OTHER", "--product", "FC-050", "-c", c, check=False)
            assert refused.returncode == 1 and f"batch {BATCH} is active" in refused.stderr
            await run_cli("material", "add", "--material", "RM-010", "--lot", "GLY-77", "--target", "25",
                          "--actual", "25.02", "--scale", "SC-02", "--tolerance", "0.05", "--verifier", "li.na",
                          "-c", c)
            tailed = await run_cli("tail", "-n", "30", "--unit", "WS-01", "--json", "-c", c)
            items = [orjson.loads(line) for line in tailed.stdout.splitlines()]
            assert len(items) == 30 and {i["unit"] for i in items} == {"WS-01"}
            assert {(i["batch"], i["phase"]) for i in items} == {(BATCH, "dispense")}
            await run_cli("batch", "phase", "emulsify", "-c", c)
            await run_cli("qc", "add", "--test", "pH", "--value", "6.1", "--spec", "5.5..6.5", "--sample", "S-1",
                          "-c", c)
            text = (await run_cli("tail", "-n", "5", "--tag", "FL-01.*", "-c", c)).stdout.splitlines()
            assert len(text) == 5 and all("FL-01." in line and f"{BATCH}/emulsify" in line for line in text)
            bad = await run_cli("tail", "--unit", "NOPE-9", "-c", c, check=False)
            assert bad.returncode == 1 and "no tag belongs to unit(s) NOPE-9" in bad.stderr

            # -- status, as text and as JSON -----------------------------------------------------
            st = orjson.loads((await run_cli("status", "--json", "-c", c)).stdout)
            assert st["context"]["batch"] == BATCH and st["context"]["phase"] == "emulsify"
            ages = {t["tag"]: t["age_s"] for t in st["tags"]}
            assert ages["EM-01.temperature"] is not None and ages["EM-01.temperature"] < 5
            b = st["buffer"]
            assert b["undelivered_records"] > 0 and b["oldest_undelivered_age_s"] > 0  # no store acknowledges
            assert b["quota_bytes"] == 1024 * 2**20 and b["readings_per_s"] > 0
            assert st["uplink"]["connected"] and isinstance(st["alarms"], list)
            assert all(isinstance(s["overruns"], int) and s["overruns"] >= 0 for s in st["sources"])
            human = (await run_cli("status", "-c", c)).stdout
            assert f"batch {BATCH}" in human and "uplink  connected" in human and "records not yet acknowledged" \
                in human and "alarms  " in human and " skipped " in human

            # -- metrics and health --------------------------------------------------------------
            status_line, body = await http_get(metrics_port, "/metrics")
            assert status_line.split(" ", 1)[1] == "200 OK"
            assert metric(body, "blackbox_readings_total") > 100
            assert metric(body, "blackbox_buffer_undelivered_records") > 0
            assert metric(body, "blackbox_source_connected") == 2
            assert 'blackbox_source_cycle_seconds{source="line-modbus"}' in body
            assert 'blackbox_source_overruns_total{source="line-modbus"}' in body
            assert (await http_get(metrics_port, "/health"))[0].split(" ", 1)[1] == "200 OK"
            await run_cli("batch", "end", "-c", c)

            # -- SIGHUP: a good file is applied and recorded, a bad one refused ------------------
            first_hash = st["config_sha256"]
            edit_config(config, lambda d: d["seal"].update(max_age=0.5))
            new_hash = hashlib.sha256(config.read_bytes()).hexdigest()
            agent.send_signal(signal.SIGHUP)
            await eventually(lambda: (s := agent_status(sock)) and s["config_sha256"] == new_hash, 20,
                           "the reloaded configuration to be in force")
            # the datagram may still be on its way to the test's socket when status already answers
            await eventually(lambda: notify.count("READY=1") == 2, 10, "READY=1 after the reload")
            assert notify.count("RELOADING=1") == 1
            good = config.read_text()
            config.write_text("sources: [\n")
            agent.send_signal(signal.SIGHUP)
            await eventually(lambda: "configuration reload refused" in log.read_text(), 20, "a broken file refused")
            config.write_text(good)
            edit_config(config, lambda d: d["buffer"].update(quota_mb=10))
            agent.send_signal(signal.SIGHUP)
            await eventually(lambda: "buffer can only change with a restart" in log.read_text(), 20,
                           "a change of the buffer section refused")
            status = agent_status(sock)
            assert status is not None and status["config_sha256"] == new_hash
            assert notify.count("RELOADING=1") == 1

            # -- SIGTERM: graceful -----------------------------------------------------------------
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 30) == 0, log.read_text()[-3000:]
            assert notify.count("STOPPING=1") == 1
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            await notify.close()

    # -- the record: who, what, and every reading of the batch attributed ----------------------
    buffer = tmp_path / "buffer.sqlite"
    applied = events_of(buffer, "config.applied")
    assert [(e["data"]["sha256"], e["data"]["reason"]) for e in applied] == [(first_hash, "start"),
                                                                             (new_hash, "reload")]
    started, = events_of(buffer, "batch.started")
    ended, = events_of(buffer, "batch.ended")
    assert started["data"]["operator"].startswith("zhang.wei") and started["data"]["recipe_version"] == "3"
    # (the simulated weighing station and QC instrument record theirs too)
    material, = [e for e in events_of(buffer, "material.consumed") if e["data"]["lot"] == "GLY-77"]
    assert material["data"]["in_tolerance"] is True and material["data"]["verifier"] == "li.na"
    assert material["data"]["operator"] == getpass.getuser()  # no --operator: the login name
    assert material["batch"] == BATCH and material["phase"] == "dispense"
    qc, = [e for e in events_of(buffer, "qc.result") if e["data"]["sample"] == "S-1"]
    assert qc["data"]["pass"] is True and qc["phase"] == "emulsify"
    phases = {e["seq"]: e["data"]["phase"] for e in events_of(buffer, "batch.phase")}
    with sqlite3.connect(buffer) as db:
        rows = db.execute("SELECT seq, batch, phase FROM readings WHERE seq BETWEEN ? AND ?",
                          (started["seq"], ended["seq"])).fetchall()
    assert len(rows) > 100
    for seq, batch, phase in rows:
        in_force = phases[max(s for s in phases if s < seq)]
        assert (batch, phase) == (BATCH, in_force), f"reading {seq} is attributed to {batch}/{phase}"
