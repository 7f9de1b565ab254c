"""The quota end to end: the store is away, the buffer fills, the oldest undelivered data is dropped with
gap events and an alarm; when the store is back, all of it arrives there, and the regulator's trace
shows the gap: nothing is lost without a record of it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from agent_helpers import mqtt_settings
from services import require_mosquitto
from sqlalchemy import text
from store_key import STORE_SIGNER, STORE_VKEY

from blackbox.agent.runtime import Agent
from blackbox.agent.status import status_report
from blackbox.config import load_config
from blackbox.model import Sample
from blackbox.seal import generate_key_file, public_key_pem
from blackbox.store.chunks import stored_readings
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.service import StoreService
from blackbox.store.trace import trace_batch

TAGS = 1000
CYCLES = 120
BATCH = "FC050-QUOTA-01"


@pytest.mark.slow
async def test_a_full_quota_drops_with_gap_events_and_an_alarm_that_reach_the_store(tmp_path: Path) -> None:
    host, port = require_mosquitto()
    mqtt = mqtt_settings(host, port)
    path = tmp_path / "blackbox.yaml"
    path.write_text(yaml.safe_dump({
        "site": {"id": "SH-FX-01", "name": "test", "licence": "x"},
        "gateway": {"id": "gw-quota", "key_file": str(tmp_path / "gw.key")},
        "agent": {"control_socket": str(tmp_path / "agent.sock")},
        "buffer": {"path": str(tmp_path / "buffer.sqlite"), "synchronous": "NORMAL", "quota_mb": 2},
        "seal": {"max_records": 2000, "max_age": 0.2},
        "uplink": {"mqtt": mqtt, "shutdown_grace": 0, "store_key": STORE_VKEY},
        "store": {"database_url": f"sqlite:///{tmp_path / 'store.sqlite'}", "mqtt": {**mqtt, "client_id": "st"}}}))
    loaded = load_config(path)
    key = generate_key_file(tmp_path / "gw.key")
    agent = Agent(loaded, key)
    await agent.start()
    service: StoreService | None = None
    try:
        await agent.recorder.commit(change=lambda t: t.start_batch(BATCH, "FC-050", None, None, "fill", "tester"))
        for i in range(CYCLES):  # the store is not there: nothing is acknowledged
            assert await agent.recorder.record([Sample(f"PLC-{t:04d}.value", float(i * TAGS + t))
                                                for t in range(TAGS)]) is not None
        await agent.recorder.commit(change=lambda t: t.end_batch("tester"))
        assert agent.recorder.dropped_records > 0
        st = await status_report(agent)
        assert [a["level"] for a in st["alarms"]] == ["DATA_LOSS"]
        assert st["buffer"]["dropped_records"] == agent.recorder.dropped_records

        engine = open_store(loaded.config.store.database_url)
        Ingestor(engine).enroll("gw-quota", "SH-FX-01", public_key_pem(key.public_key()))
        service = StoreService(engine, loaded.config.store.mqtt, loaded.config.store.mqtt.topic_root,
                               signer=STORE_SIGNER)
        service.start()
        last = await agent.drain()
    finally:
        await agent.shutdown()
        if service is not None:
            service.stop()

    with engine.connect() as conn:
        reading_seqs = [r.seq for r in stored_readings(conn)]
        stored = set(reading_seqs) | {s for (s,) in conn.execute(text("SELECT seq FROM events"))}
        n_readings = len(reading_seqs)
        gaps = [orjson.loads(d) if isinstance(d, str) else d for (d,) in conn.execute(
            text("SELECT data FROM events WHERE type = 'buffer.gap'"))]
        alarms = conn.execute(text("SELECT count(*) FROM events WHERE type = 'alarm.raised'")).scalar()
        rejected = conn.execute(text("SELECT count(*) FROM rejections")).scalar()
    assert rejected == 0 and alarms == 1 and gaps
    covered = set(stored)
    for g in gaps:
        covered |= set(range(g["first_seq"], g["last_seq"] + 1))
    assert covered == set(range(1, last + 1)), "records are missing without a gap event that says so"
    assert n_readings + sum(g["readings"] for g in gaps) == CYCLES * TAGS
    report = trace_batch(engine, BATCH)
    assert report.integrity.verdict == "incomplete", report.integrity.reasons
    assert any(line.type == "buffer.gap" for line in report.integrity.gaps)
    engine.dispose()
