"""The whole path with real parts: simulator, agent and store as separate processes, the machine's
Mosquitto and a fresh PostgreSQL database. Every reading the agent stored must be in the store once.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from agent_helpers import BLACKBOX, DIAGNOSABLE, agent_status, cli, edit_config, mqtt_settings, stop_process
from services import fresh_postgres_database, require_mosquitto
from sqlalchemy import create_engine, text
from waiting import eventually

from blackbox.demo import DEMO_CONFIG, write_config
from blackbox.sim import Simulator
from blackbox.store.chunks import stored_readings

SPEED = 1200.0


@pytest.mark.slow
async def test_agent_and_store_processes_deliver_every_reading_exactly_once(tmp_path: Path) -> None:
    host, port = require_mosquitto()
    with fresh_postgres_database() as pg_url:
        async with Simulator(seed=7, speed=SPEED, batches=1, opcua_port=0, modbus_port=0,
                             durations={"idle": 3 * SPEED}) as sim:
            mqtt = mqtt_settings(host, port)
            store_mqtt = {**mqtt, "client_id": f"store-{mqtt['topic_root']}"}
            config = write_config(DEMO_CONFIG, tmp_path, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port,
                                  mqtt=mqtt, database_url=pg_url, store_mqtt=store_mqtt)
            # at SIGTERM the agent waits for the store's acks up to shutdown_grace, and no longer than it needs:
            # the default 5 s is less than a store on a loaded machine can be behind
            edit_config(config, lambda d: d["uplink"].update(shutdown_grace=60))
            cli("keys", "init", "-c", str(config))
            public_pem = cli("keys", "show", "-c", str(config)).stdout.split("\n\n", 1)[1]
            (tmp_path / "gateway.pub.pem").write_text(public_pem)
            cli("store", "enroll", "gw-cream-01", str(tmp_path / "gateway.pub.pem"), "--site", "SH-FX-01",
                "-c", str(config))

            store = subprocess.Popen([*BLACKBOX, "store", "serve", "-c", str(config)], env=DIAGNOSABLE,
                                     stderr=open(tmp_path / "store.log", "w"))  # noqa: SIM115
            agent = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)], env=DIAGNOSABLE,
                                     stderr=open(tmp_path / "agent.log", "w"))  # noqa: SIM115
            try:
                sock = tmp_path / "agent.sock"
                await eventually(lambda: (st := agent_status(sock)) is not None
                               and all(s["connected"] for s in st["sources"]), 60, "the agent to poll both sources")
                await asyncio.wait_for(sim.wait(), timeout=120)
                await eventually(lambda: (st := agent_status(sock)) is not None and st["context"]["batch"] is None,
                               30, "the agent to see the batch end")
                # waited for in a thread: the simulated line runs in this event loop and must go on
                # answering while the agent finishes its cycle in progress
                agent.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(agent.wait, 90) == 0, (tmp_path / "agent.log").read_text()
            finally:
                # the store waits up to 10 s for its worker threads: 60 s leaves a loaded machine room
                for proc, log in ((agent, tmp_path / "agent.log"), (store, tmp_path / "store.log")):
                    await asyncio.to_thread(stop_process, proc, log, 60)

        with sqlite3.connect(tmp_path / "buffer.sqlite") as buf:
            buffered = {row[0] for row in buf.execute("SELECT seq FROM readings")}
            undelivered = buf.execute("SELECT count(*) FROM sealed_batches WHERE delivered_at_us IS NULL").fetchone()
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            stored = [r.seq for r in stored_readings(conn)]
            batch_started = conn.execute(text("SELECT count(*) FROM events WHERE type='batch.started'")).scalar()
        engine.dispose()

    assert undelivered == (0,), "the agent stopped with batches the store never acknowledged"
    assert len(buffered) > 1000
    assert len(stored) == len(set(stored)), "a reading is in the store twice"
    assert set(stored) == buffered, f"missing in store: {sorted(buffered - set(stored))[:10]}"
    assert batch_started == 1
