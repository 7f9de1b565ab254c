"""Faults with real processes: the agent (``blackbox run``) and the store (``blackbox store serve``)
as separate processes, a Mosquitto of the test's own, a fresh PostgreSQL database and the
simulated line. One agent run goes through the faults of issue 6 one after the other; each phase
checks its own criterion, and the end checks the whole record.

* Broker killed for 30 s and restarted mid-stream: every committed reading in the store once, in order.
* Store stopped for 60 s while broker and agent run: the backlog is held, then drained; no loss.
* Agent SIGKILLed while sending (during that drain), then restarted: no loss, no duplicate; the
  broker publishes its last will and the store records it offline.
* A key rotation requested with ``blackbox keys rotate`` from the running agent is followed by the store.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from services import fresh_postgres_database
from sqlalchemy import create_engine, text
from uplink_support import Mosquitto, Process, cli, enroll_gateway, gateway_config, uplink
from waiting import eventually

from blackbox.sim import Simulator
from blackbox.store.chunks import ReadingRow, stored_readings
from blackbox.store.ingest import decode_value

BROKER_OUTAGE_S = 30
STORE_OUTAGE_S = 60
MAX_IN_FLIGHT = 20


def store_readings(url: str) -> list[ReadingRow]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return stored_readings(conn)
    finally:
        engine.dispose()


def store_query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def gateway_status(url: str) -> tuple[str | None, str | None]:
    rows = store_query(url, "SELECT status, status_reason FROM gateways")
    return (rows[0][0], rows[0][1]) if rows else (None, None)


@pytest.mark.slow
async def test_no_loss_no_duplicate_through_broker_store_and_agent_failures(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    broker = Mosquitto(tmp_path / "mosquitto")  # no persistence: a killed broker forgets every session
    with fresh_postgres_database() as pg_url:
        async with Simulator(seed=11, speed=60, batches=None, opcua_port=0, modbus_port=0) as sim:
            mqtt = {"host": broker.host, "port": broker.port, "protocol": "5", "topic_root": f"bbt-{run}",
                    "client_id": f"agent-{run}", "reconnect_max": 2, "keepalive": 5}
            config = gateway_config(
                tmp_path, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port, mqtt=mqtt, database_url=pg_url,
                store_mqtt={**mqtt, "client_id": f"store-{run}"},
                overrides={"seal": {"max_age": 0.5},
                           "uplink": {"ack_timeout": 2.0, "ack_timeout_max": 10.0, "replay_rate": 3000,
                                      "max_in_flight": MAX_IN_FLIGHT, "shutdown_grace": 30.0}})
            enroll_gateway(config, tmp_path)
            sock = tmp_path / "agent.sock"
            broker.start()
            store = Process("store", ["store", "serve", "-c", str(config)], tmp_path).start()
            agent = Process("agent", ["run", "-c", str(config)], tmp_path).start()
            try:
                await eventually(lambda: uplink(sock).get("delivered_through_seq", 0) > 500, 60,
                                       "batches to flow to the store")

                # -- the broker is killed mid-stream for 30 s ------------------------------------------
                broker.kill()
                killed_at = time.monotonic()
                await eventually(lambda: uplink(sock).get("connected") is False, 30,
                                       "the agent to notice the broker is gone")
                before = uplink(sock)
                await asyncio.sleep(BROKER_OUTAGE_S - (time.monotonic() - killed_at))  # the outage itself
                during = uplink(sock)
                assert during["last_seq"] > before["last_seq"] + 1000, "readings are buffered during the outage"
                assert during["undelivered_batches"] > before["undelivered_batches"] + 20, "and sealed"
                broker.start()
                target = uplink(sock)["last_seq"]
                await eventually(lambda: uplink(sock).get("delivered_through_seq", 0) >= target, 90,
                                       "the backlog of the broker outage to reach the store")

                # -- the store is stopped for 60 s -----------------------------------------------------
                assert store.stop() == 0, store.tail()
                delivered_before = uplink(sock)["delivered_through_seq"]
                await asyncio.sleep(STORE_OUTAGE_S)  # the outage itself
                held = uplink(sock)
                assert held["connected"], "the broker is up all along"
                assert held["undelivered_batches"] >= 0.8 * STORE_OUTAGE_S / 0.5, "the backlog is held in the buffer"
                assert held["in_flight"] <= MAX_IN_FLIGHT, "the window stays bounded however long the outage"
                backlog_last = held["last_seq"]
                store.start()

                # -- the agent is SIGKILLed while it drains that backlog -------------------------------
                draining = await eventually(
                    lambda: (u := uplink(sock)).get("delivered_through_seq", 0) > delivered_before
                    and u["undelivered_batches"] > 10 and u, 60, "the drain to start")
                agent.kill()
                killed_seq = draining["last_seq"]
                await eventually(lambda: gateway_status(pg_url) == ("offline", "connection lost"), 30,
                                       "the broker to publish the agent's last will and the store to record it")
                agent.start()
                await eventually(lambda: uplink(sock).get("delivered_through_seq", 0) >= killed_seq, 120,
                                       "the restarted agent to deliver everything committed before the kill")
                assert killed_seq >= backlog_last, "the kill came after the store outage"
                await eventually(lambda: gateway_status(pg_url)[0] == "online", 30, "the online status")

                # -- a key rotation from the command line ----------------------------------------------
                rotated = orjson.loads(cli("keys", "rotate", "-c", str(config), "--json"))
                target = uplink(sock)["last_seq"]
                await eventually(lambda: uplink(sock).get("delivered_through_seq", 0) >= target, 60,
                                       "batches signed with the new key to be stored")
                keys = store_query(pg_url, "SELECT key_id, enrolled_by, valid_from_seq, valid_to_seq FROM gateway_keys"
                                           " ORDER BY enrolled_at_us")
                assert [tuple(k) for k in keys] == [
                    (rotated["old_key_id"], "operator", None, rotated["seq"]),
                    (rotated["new_key_id"], "rotation", rotated["seq"] + 1, None)]

                assert agent.stop(60) == 0, agent.tail()
            finally:
                for proc in (agent, store):
                    if proc.running():  # more than the agent's shutdown_grace, or this error hides the test's
                        proc.stop(60)
                broker.stop()

        with sqlite3.connect(tmp_path / "buffer.sqlite") as buf:
            buffered = buf.execute("SELECT seq, tag, value, quality, ts_us FROM readings ORDER BY seq").fetchall()
            undelivered = buf.execute("SELECT count(*) FROM sealed_batches WHERE delivered_at_us IS NULL").fetchone()
        stored = [(r.seq, r.tag, r.kind, r.num, r.text, r.quality, r.ts_us) for r in store_readings(pg_url)]
        chain = store_query(pg_url, "SELECT batch_seq, hash, prev_hash, first_seq, last_seq FROM sealed_batches "
                                    "ORDER BY batch_seq")
        rejected = store_query(pg_url, "SELECT reason, detail FROM rejections")

    assert undelivered == (0,), "the agent stopped with batches the store never acknowledged"
    assert len(buffered) > 20_000
    assert len(stored) == len(buffered), f"store has {len(stored)} readings, the buffer {len(buffered)}"
    assert [(s, t, None if v is None else orjson.loads(v), q, ts) for s, t, v, q, ts in buffered] == [
        (s, t, decode_value(k, n, x), q, ts) for s, t, k, n, x, q, ts in stored], "every reading once, unaltered"
    assert [c[0] for c in chain] == list(range(1, len(chain) + 1)), "every sealed batch arrived"
    for prev, cur in itertools.pairwise(chain):
        assert cur[2] == prev[1] and cur[3] == prev[4] + 1, f"batch {cur[0]} does not follow batch {prev[0]}"
    assert rejected == [], "nothing the genuine agent sent was refused"
