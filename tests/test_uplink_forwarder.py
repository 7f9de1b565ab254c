"""Store-and-forward with end-to-end acks, in process, against a Mosquitto of the test's own and a
real store (StoreService on SQLite): delivery once, re-sends, a held backlog, live-first replay at
a bounded rate, and bounded memory while the broker or the store is away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, func, select
from store_key import STORE_SIGNER
from uplink_support import Mosquitto, Pipeline
from waiting import eventually

from blackbox.config import MqttConfig
from blackbox.seal import public_key_pem
from blackbox.store.chunks import stored_readings
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor, IngestResult
from blackbox.store.schema import create_schema, gateways, sealed_batches
from blackbox.store.service import StoreService

SITE, GATEWAY = "SH-PD-01", "gw-01"


@pytest.fixture
def mqtt(broker: Mosquitto) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, topic_root=f"bbt-{uuid.uuid4().hex[:8]}")


class Store:
    """The real store service on a SQLite file; remembers the order in which batches were handled."""

    def __init__(self, path: Path, mqtt: MqttConfig) -> None:
        self.engine: Engine = make_engine(f"sqlite:///{path}")
        create_schema(self.engine)
        self.mqtt = mqtt.model_copy(update={"client_id": f"store-{uuid.uuid4().hex[:8]}"})
        self.results: list[IngestResult] = []
        self._earlier = 0
        """Results of the services stopped before the current one."""
        self.service: StoreService | None = None

    def enroll(self, key: Any) -> None:
        Ingestor(self.engine).enroll(GATEWAY, SITE, public_key_pem(key.public_key()))

    def start(self) -> Store:
        self._earlier = len(self.results)
        self.service = StoreService(self.engine, self.mqtt, on_result=lambda _t, r: self.results.append(r),
                                    signer=STORE_SIGNER)
        self.service.start()
        assert self.service.wait_subscribed(10), "the store did not get its subscription"
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def reported(self) -> bool:
        """Every batch the store has answered is in :attr:`results`.

        The service calls ``on_result`` after it has published the answer: a gateway can have its ack
        (and a test run on) before the result is reported here. It counts what it answers first.
        """
        st = self.service.stats if self.service is not None else None
        return st is None or len(self.results) - self._earlier == st.stored + st.duplicate + st.rejected

    async def all_stored(self) -> list[int]:
        """:meth:`stored`, once every answer the store has published is reported."""
        await eventually(self.reported, 10, "the store to report every batch it answered")
        return self.stored()

    def stored(self) -> list[int]:
        """batch_seq of every batch newly stored, in the order the store committed them."""
        return [r.batch_seq for r in self.results if r.status == "stored" and r.batch_seq is not None]

    def reading_seqs(self) -> list[int]:
        with self.engine.connect() as conn:
            return [r.seq for r in stored_readings(conn)]

    def n_batches(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(sealed_batches)).scalar_one()


@pytest.fixture
def store(tmp_path: Path, mqtt: MqttConfig) -> Iterator[Store]:
    s = Store(tmp_path / "store.sqlite", mqtt)
    yield s
    s.stop()
    s.engine.dispose()


@pytest.fixture
async def make_pipeline(tmp_path: Path, mqtt: MqttConfig) -> AsyncIterator[Any]:
    made: list[Pipeline] = []

    def make(**kwargs: Any) -> Pipeline:
        directory = tmp_path / f"agent{len(made)}"
        directory.mkdir()
        p = Pipeline(directory, kwargs.pop("mqtt", mqtt), **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.stop()


def buffered_reading_seqs(p: Pipeline) -> list[int]:
    return [r.seq for r in p.buffer.readings_between(1, p.buffer.last_seq)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_every_record_arrives_once_and_is_marked_delivered(
    make_pipeline: Any, store: Store, mqtt: MqttConfig, protocol: Literal["5", "3.1.1"]
) -> None:
    mqtt = mqtt.model_copy(update={"protocol": protocol})
    store.mqtt = store.mqtt.model_copy(update={"protocol": protocol})
    p = make_pipeline(mqtt=mqtt, seal={"max_records": 700})
    store.enroll(p.key)
    store.start()
    for _ in range(3):
        await p.commit(1000)
    await (await p.start()).delivered()

    assert store.reading_seqs() == buffered_reading_seqs(p) and len(store.reading_seqs()) == 3000
    assert await p.db(p.buffer.pending_counts) == (0, 3000)
    assert sorted(await store.all_stored()) == list(range(1, store.n_batches() + 1))  # each batch stored once
    assert p.forwarder.last_delivered_seq == 3000


async def test_a_batch_nobody_acknowledged_is_sent_again(make_pipeline: Any, store: Store) -> None:
    p = make_pipeline(uplink={"ack_timeout": 0.2, "ack_timeout_max": 0.4})
    store.enroll(p.key)
    await p.commit(10)
    await p.start()
    # no store subscribed yet: the broker discards the batch; only a re-send can bring it to the store
    await eventually(lambda: p.forwarder.resent >= 2, 10, "the forwarder to re-send")
    store.start()
    await p.delivered()
    assert store.reading_seqs() == list(range(1, 11))
    assert await store.all_stored() == [1]


async def test_a_rejected_batch_stays_and_is_stored_once_its_key_is_enrolled(make_pipeline: Any, store: Store) -> None:
    p = make_pipeline(uplink={"ack_timeout": 0.2, "ack_timeout_max": 0.4})
    store.start()
    await p.commit(5)
    await p.start()
    await eventually(lambda: p.forwarder.rejected >= 1, 10, "the store to reject the unknown gateway")
    assert p.forwarder.rejections[-1] == "batch 1: unknown_gateway"
    assert await p.db(p.buffer.pending_counts) == (1, 5)  # rejected is not delivered: kept
    store.enroll(p.key)  # the operator enrolls the gateway late
    await p.delivered()
    assert store.reading_seqs() == [1, 2, 3, 4, 5]


async def test_store_away_backlog_is_held_with_a_bounded_window(make_pipeline: Any, store: Store) -> None:
    p = make_pipeline(seal={"max_records": 50}, uplink={"ack_timeout": 0.1, "ack_timeout_max": 0.2,
                                                        "max_in_flight": 8})
    store.enroll(p.key)
    store.start()
    await p.start()
    await p.commit(10)
    await p.delivered()
    store.stop()  # its session stays at the broker, which queues what is published meanwhile

    for _ in range(20):
        await p.commit(100)
    await p.sealer.flush()
    await eventually(lambda: p.forwarder.resent >= 20, 10, "re-sends while the store is away")
    pending, _ = await p.db(p.buffer.pending_counts)
    assert pending == 40, "every sealed batch is held in the buffer until the store acknowledges it"
    assert len(p.forwarder._in_flight) <= 8
    assert len(p.session._client._out_messages) <= 8 + 2, "paho's queue is bounded by the window"

    store.start()
    await p.delivered()
    assert store.reading_seqs() == list(range(1, 2011))
    assert sorted(await store.all_stored()) == list(range(1, 42)), "each of the 41 batches newly stored exactly once"
    assert store.n_batches() == 41


async def test_live_batches_flow_while_a_backlog_replays_in_order(make_pipeline: Any, store: Store) -> None:
    # The replay's token bucket runs on a clock of the test's own: the replay is held between bursts for as long
    # as the test looks, however slow the machine, so "the live batch did not wait for the backlog" is a fact
    # about the forwarder, not about how fast the test got from one line to the next.
    now = [0.0]
    p = make_pipeline(seal={"max_records": 100}, uplink={"max_in_flight": 8, "replay_rate": 1000})
    p.forwarder._clock = lambda: now[0]
    p.forwarder._tokens_at = 0.0
    store.enroll(p.key)
    for _ in range(30):  # a backlog of 30 batches, sealed while the uplink was down
        await p.commit(100)
    await p.sealer.flush()
    store.start()
    await p.start(seal=False)
    live = list(range(31 - p.forwarder.live_slots, 31))  # the newest (29 and 30) go out live at once

    # t = 0: the live batches, then a full bucket of replay (1,000 records: batches 1-10), oldest first; then
    # the replay waits for the bucket to refill, which it cannot until the test moves the clock
    await eventually(lambda: len(store.stored()) == len(live) + 10 and not p.forwarder._in_flight and store.reported(),
                     30,
                     "the live batches and the first replay burst")
    assert store.stored() == [*live, *range(1, 11)]
    assert p.forwarder._tokens <= 0

    await p.commit(100)  # live data while 18 batches of backlog wait for the replay's bucket
    await p.sealer.seal_once()
    await eventually(lambda: 31 in store.stored(), 10, "the live batch 31 while the replay is held")
    assert store.stored() == [*live, *range(1, 11), 31], "the live batch went out, and only it"

    while len(store.stored()) < 31:  # each further second of the test's clock allows 10 more batches
        before = len(store.stored())
        now[0] += 1
        p.forwarder.notify()
        await eventually(lambda: len(store.stored()) > before and not p.forwarder._in_flight  # noqa: B023
                         and store.reported() and (p.forwarder._tokens <= 0 or len(store.stored()) == 31), 10,
                         f"the replay burst at t={now[0]}")
    await p.delivered()
    assert await store.all_stored() == [*live, *range(1, 11), 31, *range(11, 29)], "the replay goes oldest first"
    assert now[0] == 2.0, "18 batches of 100 records at 1,000 records/s: two more bursts"
    assert store.reading_seqs() == list(range(1, 3101))


async def test_replay_rate_is_bounded(make_pipeline: Any, store: Store) -> None:
    now = [0.0]
    p = make_pipeline(seal={"max_records": 100}, uplink={"max_in_flight": 8, "replay_rate": 500})
    p.forwarder._clock = lambda: now[0]
    p.forwarder._tokens_at = 0.0
    store.enroll(p.key)
    for _ in range(20):
        await p.commit(100)
    await p.sealer.flush()
    store.start()
    await p.start(seal=False)

    def replayed() -> int:
        return sum(1 for n in store.stored() if n <= 20 - p.forwarder.live_slots)

    # t = 0: a full bucket (one second's worth: 500 records = 5 batches), then nothing until time passes
    await eventually(lambda: replayed() == 5 and not p.forwarder._in_flight and store.reported(), 10, "the first burst")
    assert p.forwarder._tokens <= 0
    for step in range(1, 4):  # each further half second allows 250 records: 2 or 3 batches of 100
        before = replayed()
        now[0] = 0.5 * step
        p.forwarder.notify()
        await eventually(lambda: replayed() > before and p.forwarder._tokens <= 0  # noqa: B023
                               and not p.forwarder._in_flight and store.reported(), 10, "the bucket to be spent")
        assert replayed() * 100 <= 500 + 500 * now[0] + 100, f"{replayed()} batches replayed by t={now[0]}"
    assert replayed() == 5 + 3 + 2 + 3


async def test_nothing_piles_up_in_memory_while_the_broker_is_down(
    make_pipeline: Any, tmp_path: Path, store: Store
) -> None:
    own = Mosquitto(tmp_path / "own-broker")
    own.start()
    mqtt = MqttConfig(host=own.host, port=own.port, topic_root=f"bbt-{uuid.uuid4().hex[:8]}")
    store.mqtt = mqtt.model_copy(update={"client_id": store.mqtt.client_id})
    p = make_pipeline(mqtt=mqtt, seal={"max_records": 20}, uplink={"ack_timeout": 0.1, "max_in_flight": 6})
    store.enroll(p.key)
    try:
        await p.start()
        await p.connected()
        own.kill()
        await eventually(lambda: not p.session.connected, 10, "the uplink to notice the broker is gone")
        for _ in range(50):  # 1,000 records, 50 batches sealed during the outage
            await p.commit(20)
        await p.sealer.flush()
        assert await p.db(p.buffer.pending_counts) == (50, 1000)
        assert len(p.forwarder._in_flight) == 0, "nothing is published while disconnected"
        assert len(p.session._client._out_messages) == 0

        own.start()
        store.start()
        await p.delivered(timeout=60)
        assert store.reading_seqs() == list(range(1, 1001))
    finally:
        store.stop()
        own.stop()


async def test_the_store_tracks_the_gateway_status(make_pipeline: Any, store: Store) -> None:
    p = make_pipeline()
    store.enroll(p.key)
    store.start()

    def status() -> tuple[str | None, str | None]:
        with store.engine.connect() as conn:
            row = conn.execute(select(gateways.c.status, gateways.c.status_reason)).one()
            return row.status, row.status_reason

    await p.start()
    await eventually(lambda: status()[0] == "online", 10, "the online status")
    await asyncio.get_running_loop().run_in_executor(None, p.session.stop)
    p.session = None
    await eventually(lambda: status() == ("offline", "stopped"), 10, "the offline status")
