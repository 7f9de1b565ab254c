"""Reading chunks partitioned by month on PostgreSQL: nothing refused, partitions made ahead, strays moved in."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from store_synth import GATEWAY, SITE, Gateway
from stored import readings_of

from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import upgrade_schema
from blackbox.store.partitions import ensure_partitions, existing_partitions, is_partitioned, month_start_us
from blackbox.store.schema import create_schema, reading_chunks


def us(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1_000_000


def ingest_at(engine: Engine, gw: Gateway, *times: int) -> None:
    for k, t in enumerate(times):
        gw.reading("EM-01.temperature", 70.0 + k, t)
    assert Ingestor(engine).handle(gw.seal().wire, SITE, GATEWAY).status == "stored"


def where_rows_are(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tableoid::regclass::text, sum(n) FROM reading_chunks GROUP BY 1"))
        return {name.split(".")[-1]: int(n) for name, n in rows}


@pytest.mark.parametrize("made_by", ["migrations", "create_schema"])
def test_postgresql_readings_are_partitioned_and_nothing_is_refused(pg_engine: Engine, made_by: str) -> None:
    upgrade_schema(pg_engine) if made_by == "migrations" else create_schema(pg_engine)
    with pg_engine.connect() as conn:
        assert is_partitioned(conn)
        assert existing_partitions(conn) == ["reading_chunks_default"]
    indexes = {tuple(ix["column_names"]) for ix in inspect(pg_engine).get_indexes("reading_chunks")}
    assert {("batch", "tag"), ("tag", "first_ts_us"), ("gateway_id", "last_seq")} <= indexes
    assert inspect(pg_engine).get_pk_constraint("reading_chunks")["constrained_columns"] == [
        "gateway_id", "first_seq", "first_ts_us"]
    gw = Gateway()
    Ingestor(pg_engine).enroll(GATEWAY, SITE, gw.public_pem)
    # no partition yet; one sealed batch each, so one chunk each
    for t in (us(1999, 12, 31), us(2026, 11, 30, 23), us(2026, 12, 1)):
        ingest_at(pg_engine, gw, t)
    assert where_rows_are(pg_engine) == {"reading_chunks_default": 3}

    created = ensure_partitions(pg_engine, ahead=2, at_us=us(2026, 12, 4))
    # last month to two ahead, and the strays' months (1999-12 from the default partition)
    assert created == ["reading_chunks_p199912", "reading_chunks_p202611", "reading_chunks_p202612",
                       "reading_chunks_p202701", "reading_chunks_p202702"]
    assert where_rows_are(pg_engine) == {"reading_chunks_p199912": 1, "reading_chunks_p202611": 1,
                                         "reading_chunks_p202612": 1}
    assert ensure_partitions(pg_engine, ahead=2, at_us=us(2026, 12, 4)) == []
    ingest_at(pg_engine, gw, us(2027, 1, 15))
    ingest_at(pg_engine, gw, us(2030, 6, 1))
    counts = where_rows_are(pg_engine)
    assert counts["reading_chunks_p202701"] == 1 and counts["reading_chunks_default"] == 1
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.sum(reading_chunks.c.n))).scalar_one() == 5
        bounds = conn.execute(text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
                                   "WHERE relname = 'reading_chunks_p202612'")).scalar_one()
    assert bounds == f"FOR VALUES FROM ('{us(2026, 12)}') TO ('{us(2027, 1)}')"


def test_partition_maintenance_from_several_workers_at_once(pg_engine: Engine) -> None:
    upgrade_schema(pg_engine)
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            made.append(ensure_partitions(pg_engine, ahead=6, at_us=us(2027, 3, 10)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(len(m) for m in made) == [0, 0, 8]  # one worker made them, the others found them
    with pg_engine.connect() as conn:
        assert len(existing_partitions(conn)) == 9


def test_sqlite_keeps_a_plain_table(sqlite_engine: Engine) -> None:
    upgrade_schema(sqlite_engine)
    with sqlite_engine.connect() as conn:
        assert not is_partitioned(conn)
    assert ensure_partitions(sqlite_engine) == []
    assert inspect(sqlite_engine).get_pk_constraint("reading_chunks")["constrained_columns"] == [
        "gateway_id", "first_seq", "first_ts_us"]


def test_readings_of_a_store_at_0004_survive_the_partitioning(empty_engine: Engine) -> None:
    upgrade_schema(empty_engine, "0004")
    columns = ("gateway_id, seq, batch_seq, tag, kind, num, text, quality, reason, ts_us, source_ts_us, batch, "
               "phase")
    with empty_engine.begin() as conn:  # rows as a 0004 store held them (today's ingest writes the new table)
        conn.execute(text("INSERT INTO gateways (id, site, gateway, created_at_us) VALUES (1, :s, :g, 1)"),
                     {"s": SITE, "g": GATEWAY})
        conn.execute(text(f"INSERT INTO readings ({columns}) VALUES (1, :seq, 1, 'EM-01.temperature', 'float', "
                          ":num, NULL, 'GOOD', NULL, :ts, NULL, 'B-1', 'mix')"),
                     [{"seq": k + 1, "num": 70.5 + k, "ts": us(2026, 10 + k, 2)} for k in range(3)])
    upgrade_schema(empty_engine)
    rows = readings_of(empty_engine)
    assert [(r.seq, r.num, r.ts_us, r.batch, r.quality) for r in rows] == [
        (k + 1, 70.5 + k, us(2026, 10 + k, 2), "B-1", "GOOD") for k in range(3)]  # its quality as written
    if empty_engine.dialect.name == "postgresql":
        ensure_partitions(empty_engine, ahead=1, at_us=us(2026, 12, 4))
        assert where_rows_are(empty_engine) == {"reading_chunks_p202610": 3}  # one chunk: batch 1, its first time


def test_month_bounds() -> None:
    assert month_start_us(2026, 13) == month_start_us(2027, 1) == us(2027, 1)
    assert month_start_us(2026, 12) - month_start_us(2026, 11) == 30 * 86400 * 1_000_000
