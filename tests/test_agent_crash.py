"""The crash test: the agent records the simulated line at a high rate and is killed with SIGKILL at
random moments, over and over, restarting each time. Afterwards the buffer is intact, its sequence
numbers contiguous and unique, and every reading known to have been committed before a kill is
there, checked against two independent records: what ``tail`` showed live (it shows only committed
readings) and the store's copy, which must hold every record exactly once and never have refused a
batch (a reused sequence number would be a forked chain). Every reading of each production batch
that finished meanwhile carries that batch and the phase it was taken in.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from agent_helpers import BLACKBOX, agent_status, cli, edit_config, mqtt_settings
from services import require_mosquitto
from sqlalchemy import create_engine, text
from waiting import eventually

from blackbox.control_client import AgentUnreachable, CommandFailed, stream
from blackbox.demo import DEMO_CONFIG, write_config
from blackbox.sim import Simulator
from blackbox.store.chunks import stored_readings
from blackbox.store.trace import trace_batch

KILLS = 22
SPEED = 1200.0
BULK_TAGS = 120
"""Extra Modbus tags polled every 20 ms: with the demo line, about 6,500 readings/s."""
READINGS_PER_S = 6_500


class TailRecord:
    """Follows ``tail`` across the agent's lives: every reading it shows was committed."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.seen: dict[int, tuple[str, Any, int]] = {}
        self.life_items = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.life_items = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                for item in stream(self.sock, "tail", {}):
                    if "seq" in item:
                        self.seen[item["seq"]] = (item["tag"], item["value"], item["ts_us"])
                        self.life_items += 1
                return  # the agent went away
            except AgentUnreachable:
                self._stop.wait(0.05)  # not up yet
            except (OSError, CommandFailed, ValueError):
                return  # killed mid-line

    def join(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "tail did not notice the agent's death"


def crash_config(tmp_path: Path, sim: Simulator, host: str, port: int) -> Path:
    mqtt = mqtt_settings(host, port)
    config = write_config(DEMO_CONFIG, tmp_path, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port, mqtt=mqtt,
                          database_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
                          store_mqtt={**mqtt, "client_id": mqtt["client_id"].replace("agent", "store")})

    def high_rate(data: dict[str, Any]) -> None:
        data["sources"].append({
            "name": "bulk", "protocol": "modbus", "host": "127.0.0.1", "port": sim.modbus_port, "unit_id": 1,
            "poll_interval": 0.02, "timeout": 1.0,
            "tags": [{"name": f"BULK.r{i:03d}", "address": f"ir:{i % 36}", "type": "uint16", "category": "process",
                      "unit": "BULK"} for i in range(BULK_TAGS)]})
        data["seal"] = {**data.get("seal", {}), "max_age": 0.2}
        data["uplink"] = {**data["uplink"], "shutdown_grace": 20}

    edit_config(config, high_rate)
    return config


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_that_was_committed(tmp_path: Path) -> None:
    host, port = require_mosquitto()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    sock = tmp_path / "agent.sock"
    # batches without end: one batch could be over before the set-up's command-line calls are (a loaded machine)
    async with Simulator(seed=11, speed=SPEED, opcua_port=0, modbus_port=0, batches=None,
                         durations={"idle": 2 * SPEED}) as sim:
        config = crash_config(tmp_path, sim, host, port)
        c = str(config)
        await asyncio.to_thread(cli, "keys", "init", "-c", c)
        pub = (await asyncio.to_thread(cli, "keys", "show", "-c", c)).stdout.split("\n\n", 1)[1]
        (tmp_path / "gateway.pub.pem").write_text(pub)
        await asyncio.to_thread(cli, "store", "enroll", "gw-cream-01", str(tmp_path / "gateway.pub.pem"),
                                "--site", "SH-FX-01", "-c", c)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        def recorded(agent: subprocess.Popen[bytes], items: int) -> Callable[[], bool]:
            """``items`` readings recorded in this life, or the agent exited."""
            return lambda: tail.life_items >= items or agent.poll() is not None

        store = subprocess.Popen([*BLACKBOX, "store", "serve", "-c", c], env=env,
                                 stderr=(tmp_path / "store.log").open("w"))
        log = (tmp_path / "agent.log").open("a")
        tail = TailRecord(sock)
        try:
            for life in range(KILLS):
                agent = subprocess.Popen([*BLACKBOX, "run", "-c", c], env=env, stderr=log)
                tail.start()
                await eventually(recorded(agent, 1), 60,  # a start takes seconds on a loaded machine
                               f"life {life}: the agent to record")
                assert agent.poll() is None, f"the agent exited by itself in life {life}"
                # a random moment, counted in readings committed (up to about a second's worth)
                target = tail.life_items + rng.randint(1, READINGS_PER_S)
                await eventually(recorded(agent, target), 30,
                                 f"life {life}: {target} readings recorded before the kill")
                assert agent.poll() is None, f"the agent exited by itself in life {life}"
                agent.send_signal(signal.SIGKILL)
                await asyncio.to_thread(agent.wait, 10)
                tail.join()
            # a last life, ended gracefully: it delivers everything before it exits
            agent = subprocess.Popen([*BLACKBOX, "run", "-c", c], env=env, stderr=log)
            await eventually(lambda: (st := agent_status(sock)) and st["buffer"]["undelivered_batches"] == 0, 60,
                           "the backlog of all lives to be delivered")
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 40) == 0, (tmp_path / "agent.log").read_text()[-3000:]
        finally:
            for proc in (locals().get("agent"), store):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(proc.wait, 30)
            log.close()

    buffer = tmp_path / "buffer.sqlite"
    with sqlite3.connect(buffer) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        readings = {seq: (tag, value, ts) for seq, tag, value, ts in db.execute(
            "SELECT seq, tag, value, ts_us FROM readings")}
        events = {seq for (seq,) in db.execute("SELECT seq FROM events")}
        undelivered = db.execute("SELECT count(*) FROM sealed_batches WHERE delivered_at_us IS NULL").fetchone()[0]
        lives = db.execute("SELECT count(*) FROM events WHERE type = 'config.applied'").fetchone()[0]
    assert not readings.keys() & events, "a sequence number is used twice"
    assert set(readings) | events == set(range(1, max(readings.keys() | events) + 1)), "sequence numbers have a hole"
    assert undelivered == 0 and lives == KILLS + 1  # each life recorded its start before it was killed

    # every reading tail showed before a kill is in the buffer, unchanged
    assert len(tail.seen) > 10_000
    missing = [seq for seq in tail.seen if seq not in readings]
    assert not missing, f"{len(missing)} committed readings are gone, e.g. {missing[:5]}"
    changed = [seq for seq, (tag, value, ts) in tail.seen.items()
               if readings[seq] != (tag, None if value is None else orjson.dumps(value).decode(), ts)]
    assert not changed, f"readings differ from what was committed, e.g. {changed[:5]}"

    # the store's copy: every record once, no batch ever refused
    engine = create_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    with engine.connect() as conn:
        stored_readings_ = stored_readings(conn)
        stored_r = [r.seq for r in stored_readings_]
        stored_e = [s for (s,) in conn.execute(text("SELECT seq FROM events"))]
        rejections = conn.execute(text("SELECT reason, detail FROM rejections")).fetchall()
        batch_events = conn.execute(text(
            "SELECT seq, type, ref, data FROM events WHERE type LIKE 'batch.%' ORDER BY seq")).fetchall()
    assert rejections == [], f"the store refused batches: {rejections[:3]}"
    assert len(stored_r) == len(set(stored_r)) and len(stored_e) == len(set(stored_e))
    assert set(stored_r) == set(readings) and set(stored_e) == events

    # every reading of a finished production batch carries it and the phase it was taken in
    started = {ref: seq for seq, kind, ref, _ in batch_events if kind == "batch.started"}
    ended = {ref: seq for seq, kind, ref, _ in batch_events if kind == "batch.ended" and ref in started}
    assert ended, "no production batch finished during the test"
    checked = 0
    for batch, end in ended.items():
        phases = sorted((seq, orjson.loads(data)["phase"] if isinstance(data, str) else data["phase"])
                        for seq, kind, ref, data in batch_events if kind == "batch.phase" and ref == batch)
        rows = [(r.seq, r.batch, r.phase) for r in stored_readings_ if started[batch] < r.seq < end]
        checked += len(rows)  # few for a batch the agent was mostly dead during (restarts are slow under load)
        for seq, got_batch, got_phase in rows:
            in_force = max((p for p in phases if p[0] < seq), default=(0, None))[1]
            assert (got_batch, got_phase) == (batch, in_force), f"reading {seq} is attributed to {got_batch}/" \
                                                                 f"{got_phase}, not {batch}/{in_force}"
        if rows:  # the batch's parameters, as the trace report shows them, each with its phase
            report = trace_batch(engine, batch)
            assert report.parameters and all(p.phase for p in report.parameters)
    assert checked > 1000, f"only {checked} readings fell in finished batches: too few for the check to mean much"
    engine.dispose()
