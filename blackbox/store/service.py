"""The store's MQTT service: receive sealed batches, ingest them, acknowledge after the commit.

Delivery guarantees:

* The subscription is QoS 1 in a persistent session (fixed client id, ``clean_start=False`` with a
  session expiry on MQTT 5, ``clean_session=False`` on 3.1.1): batches published while the store
  is down are queued by the broker and delivered when it comes back.
* Incoming messages are acknowledged to the broker by hand (``manual_ack``), only after the
  database commit and after the application ack has been handed to paho. A crash anywhere before
  leaves the message unacknowledged, so the broker delivers it again and the ingest answers
  "duplicate" if it had been stored.
* paho's network thread only queues messages; a worker thread verifies each batch and derives its
  rows (no lock needed), a second one stores it and answers, in the order received, so that the
  next batch is verified while the database inserts the previous one.
  The queue never grows beyond the broker's in-flight window, because nothing is acknowledged
  before it is processed. If the database fails, the worker retries the same message with back-off
  instead of rejecting it.
* Several workers (processes, on one host or many) share the batch topic through an MQTT 5 shared
  subscription (``$share/blackbox-store/...``): the broker hands each batch to one of them, and that
  worker publishes the acknowledgement. Each worker needs its own client id (its own persistent
  session): ``--worker N`` appends ``-N`` to it. Ingest serialises the workers per gateway in the
  database (see :class:`blackbox.store.ingest.Ingestor`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from blackbox import systemd
from blackbox.config import MqttConfig, StoreConfig
from blackbox.gc_settle import settle
from blackbox.model import now_us
from blackbox.mqtt import connect_async, disable_nagle, make_client
from blackbox.prometheus import MetricsServer
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor, IngestResult, Prepared
from blackbox.store.metrics import StoreMetrics
from blackbox.store.notary import Notary
from blackbox.store.partitions import ensure_partitions
from blackbox.store.tlog import TransparencyLog, load_signer
from blackbox.tlog.note import Signer
from blackbox.topics import (
    GatewayTopics,
    parse_gateway_topic,
    store_batch_filter,
    store_checkpoint_topic,
    store_proofs_filter,
    store_status_filter,
)

log = logging.getLogger("blackbox.store.service")

SESSION_EXPIRY_S = 30 * 24 * 3600
"""How long the broker keeps the store's session (and queues batches for it) while it is away."""

QUEUE_SIZE = 1000
PIPELINE_DEPTH = 2
"""Batches verified ahead of the one being stored (each holds its decoded rows in memory)."""
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
HEARTBEAT_S = 1.0
"""The worker thread notes it is alive at least this often while idle (for the watchdog and /health)."""
STUCK_AFTER_S = 60.0
"""A worker that has not come back from one message for this long is reported unhealthy."""
PARTITIONS_EVERY_S = 3600.0
WORKER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class _Step:
    """A message on its way from stage 1 to stage 2 of the worker."""

    msg: _Message
    kind: Literal["batch", "status", "proofs", "ignore"]
    site: str = ""
    gateway: str = ""
    prepared: Prepared | IngestResult | None = None
    seconds: float = 0.0
    """Time spent in stage 1."""


_T = TypeVar("_T")


@dataclass
class ServiceStats:
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: int = 0


def default_client_id() -> str:
    """A client id that stays the same across restarts of the store on this host."""
    return f"blackbox-store-{socket.gethostname()}"[:64]


def worker_client_id(mqtt: MqttConfig, worker: str | None) -> str:
    """The client id of store worker ``worker``: the configured (or default) id, ``-<worker>`` appended.

    Stable across restarts, so that each worker finds its persistent session (and the batches the
    broker queued for it) again; distinct per worker, so that workers never take over each other's
    session. Without a worker name it is the single store's id.
    """
    base = mqtt.client_id or default_client_id()
    if worker is None:
        return base
    if not WORKER_NAME.match(worker):
        raise ValueError(f"worker name {worker!r}: use 1 to 32 letters, digits, '.', '_' or '-'")
    return f"{base}-{worker}"


def worker_metrics_port(config: StoreConfig, worker: str | None) -> int | None:
    """``metrics_port`` for worker 1 (or no worker), ``metrics_port + N - 1`` for worker N; 0 stays 0 (any)."""
    port = config.metrics_port
    if port is None or port == 0 or worker is None:
        return port
    if not worker.isdigit() or int(worker) < 1:
        raise ValueError(f"worker {worker!r} is not a number from 1: its metrics port cannot be derived "
                         "from store.metrics_port; give --metrics-port")
    result = port + int(worker) - 1
    if result >= 65536:
        raise ValueError(f"worker {worker}: metrics port {result} is beyond 65535")
    return result


class StoreService:
    """Subscribes to every gateway's batches under ``root`` and ingests them into ``engine``.

    ``on_result(topic, result)`` is called from the worker thread after each message has been
    handled and acknowledged (metrics, tests).
    """

    def __init__(
        self,
        engine: Engine,
        mqtt: MqttConfig,
        root: str | None = None,
        *,
        ingestor: Ingestor | None = None,
        on_result: Callable[[str, IngestResult], None] | None = None,
        queue_size: int = QUEUE_SIZE,
        client_id: str | None = None,
        metrics: StoreMetrics | None = None,
        signer: Signer,
    ) -> None:
        self.engine = engine
        self.config = mqtt
        self.root = root if root is not None else mqtt.topic_root
        self.ingestor = ingestor if ingestor is not None else Ingestor(engine)
        self.on_result = on_result
        self.notary = Notary(engine, signer)
        """Signs every acknowledgement (a receipt) and the log's checkpoints."""
        self.stats = ServiceStats()
        self.metrics = metrics if metrics is not None else StoreMetrics()
        self.client_id = client_id or mqtt.client_id or default_client_id()
        self._beats = [time.monotonic(), time.monotonic()]
        self.stuck_after_s = STUCK_AFTER_S
        """``/health`` reports a worker that has not come back from one message for this long."""
        self.db_error: str | None = None
        """The last database error while ingesting, until an ingest succeeds again."""
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self._v5 = mqtt.protocol == "5"
        self._filter = store_batch_filter(self.root, shared=self._v5)
        self._queue: queue.Queue[_Message | None] = queue.Queue(maxsize=queue_size)
        self._steps: queue.Queue[_Step | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
        self._committer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sub_mid: int | None = None
        self._worker: threading.Thread | None = None
        self.client = self._make_client()

    # -- MQTT session ------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = make_client(self.config, self.client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Start the worker and connect in the background (reconnecting for ever until :meth:`stop`)."""
        if self._worker is not None:
            raise RuntimeError("the store service is already started")
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="blackbox-store-verify", daemon=True)
        self._committer = threading.Thread(target=self._commit_work, name="blackbox-store-commit", daemon=True)
        self._worker.start()
        self._committer.start()
        cfg = self.config
        # the broker sends no more unacknowledged batches than the queue holds (a broker that ignores
        # this only makes _on_message wait for room)
        connect_async(self.client, cfg, session_expiry=SESSION_EXPIRY_S, receive_maximum=self._queue.maxsize)
        self.client.loop_start()
        log.info(
            "store connecting to %s:%s (MQTT %s) as %s, filter %s",
            cfg.host,
            cfg.port,
            cfg.protocol,
            self.client_id,
            self._filter,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and stop the workers, waiting up to ``timeout`` seconds for both together.

        Messages not yet handled stay unacknowledged at the broker. A worker still busy after
        ``timeout`` (a statement the database does not answer) is left behind, with a warning: its
        thread is a daemon, and what it holds is delivered again to the next session.
        """
        self._stopping.set()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            if self._worker is not None:
                # unblock the worker: it exits at the sentinel (or at once if it is retrying)
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(None)
            deadline = time.monotonic() + timeout
            for thread in (self._worker, self._committer):
                if thread is not None:
                    thread.join(max(0.0, deadline - time.monotonic()))
                    if thread.is_alive():
                        log.warning("a store thread did not stop in time, and the store stops without it: what "
                                    "it holds stays unacknowledged at the broker (%s, waited %g s)",
                                    thread.name, timeout)
            self._worker = self._committer = None
            self.subscribed.clear()
            self.connected.clear()

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the broker granted the subscription (after each reconnect too)."""
        return self.subscribed.wait(timeout)

    def worker_alive(self, within_s: float | None = None) -> bool:
        """Both worker threads run and came back from their last message within ``within_s`` seconds
        (default :attr:`stuck_after_s`)."""
        within_s = self.stuck_after_s if within_s is None else within_s
        threads = (self._worker, self._committer)
        return (all(t is not None and t.is_alive() for t in threads)
                and time.monotonic() - self.heartbeat < within_s)

    def health(self) -> tuple[bool, str]:
        """``(healthy, detail)`` for ``GET /health``: subscribed, worker responsive, database answering."""
        if not self.subscribed.is_set():
            return False, "not subscribed at the broker (connecting)"
        if not self.worker_alive():
            return False, f"the ingest worker has not answered for {time.monotonic() - self.heartbeat:.0f} s"
        if self.db_error is not None:
            return False, f"the database fails: {self.db_error}"
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            return False, f"the database does not answer: {exc.orig if exc.orig is not None else exc}"
        return True, f"ok: {self.stats.stored} stored, {self.stats.rejected} rejected, queue {self.backlog}"

    @property
    def backlog(self) -> int:
        """Messages received from the broker and waiting for the worker (not yet acknowledged)."""
        return self._queue.qsize()

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the store's connection: %s", reason_code)
            return
        self.connected.set()
        disable_nagle(client)
        log.info("store connected (session present: %s)", flags.session_present)
        topics = [(self._filter, 1), (store_status_filter(self.root), 1),
                  (store_proofs_filter(self.root, shared=self._v5), 1)]
        if self._v5:
            _, mid = client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in topics])
        else:
            _, mid = client.subscribe(topics)
        self._sub_mid = mid

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.connected.set(0)
        if reason_code == "Session taken over":
            log.error("another client connected with this store's client id %s: give each worker its own "
                      "(blackbox store serve --worker N)", self.client_id)
        if not self._stopping.is_set():
            log.warning("store disconnected from the broker: %s (reconnecting)", reason_code)

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if mid != self._sub_mid:
            return
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused the subscription %s: %s", self._filter, failed[0])
            return
        self.subscribed.set()
        self.metrics.connected.set(1)
        log.info("store subscribed to %s", self._filter)

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        # Waits only if the worker is a whole queue behind, which the receive maximum asked of the
        # broker prevents (nothing is acknowledged before it has been processed). It gives up once
        # the service stops, when the worker no longer takes from the queue: the message stays
        # unacknowledged, and the broker delivers it again to the next session.
        item = _Message(message.topic, bytes(message.payload), message.mid, message.qos)
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=HEARTBEAT_S)
                return
            except queue.Full:
                continue

    # -- workers: stage 1 decodes, verifies and derives; stage 2 stores, answers and acks, in order --

    def _beat(self, stage: int) -> None:
        self._beats[stage] = time.monotonic()

    @property
    def heartbeat(self) -> float:
        """The older of the two stages' last signs of life (idle, or between messages)."""
        return min(self._beats)

    def _work(self) -> None:
        """Stage 1: the checks that need no lock (:meth:`Ingestor.prepare`), then on to stage 2."""
        while True:
            self._beat(0)
            self.metrics.queue_depth.set(self._queue.qsize())
            try:
                item = self._queue.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                continue
            if item is None or self._stopping.is_set():
                break
            try:
                step = self._prepare(item)
            except Exception:  # a bug must not kill the worker; the message stays unacknowledged
                self.stats.errors += 1
                log.exception("store failed to process a message on %s", item.topic)
                continue
            if step is None:
                break  # stopping while the database was unavailable: the broker will deliver it again
            while not self._stopping.is_set():
                try:
                    self._steps.put(step, timeout=HEARTBEAT_S)
                    break
                except queue.Full:
                    self._beat(0)
        with contextlib.suppress(queue.Full):
            self._steps.put(None, timeout=HEARTBEAT_S)

    def _prepare(self, msg: _Message) -> _Step | None:
        parsed = parse_gateway_topic(self.root, msg.topic)
        if parsed is not None and parsed[2] == "status":
            return _Step(msg, "status", parsed[0], parsed[1])
        if parsed is not None and parsed[2] == "proofs":
            return _Step(msg, "proofs", parsed[0], parsed[1])
        if parsed is None or parsed[2] != "batches":
            log.warning("ignoring a message on %s: not a batch topic", msg.topic)
            return _Step(msg, "ignore")
        site, gateway = parsed[0], parsed[1]
        started = time.perf_counter()
        prepared = self._retrying(0, site, gateway,
                                  lambda: self.ingestor.prepare(msg.payload, site, gateway, topic=msg.topic))
        if prepared is None:
            return None
        return _Step(msg, "batch", site, gateway, prepared, time.perf_counter() - started)

    def _commit_work(self) -> None:
        """Stage 2: store, publish the answer, acknowledge to the broker, in the order received."""
        while True:
            self._beat(1)
            try:
                step = self._steps.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                self._publish_checkpoint()  # stage 2 is the one that signs and publishes
                continue
            if step is None or self._stopping.is_set():
                return  # what was verified and not stored stays unacknowledged: the broker delivers it again
            try:
                self._finish(step)
            except Exception:  # a bug must not kill the worker; the message stays unacknowledged
                self.stats.errors += 1
                log.exception("store failed to process a message on %s", step.msg.topic)

    def _finish(self, step: _Step) -> None:
        msg = step.msg
        if step.kind == "status":
            self._status(msg, step.site, step.gateway)
            return
        if step.kind == "proofs":
            self._proofs(msg, step.site, step.gateway)
            return
        if step.kind == "ignore":
            self.client.ack(msg.mid, msg.qos)
            return
        started = time.perf_counter()
        prepared = step.prepared
        if isinstance(prepared, Prepared):
            result = self._retrying(1, step.site, step.gateway, lambda: self.ingestor.store(prepared))
        else:
            result = prepared  # rejected in stage 1
        if result is None:
            return  # stopping while the database was unavailable: the broker will deliver it again
        if result.status == "stored":
            self.stats.stored += 1
        elif result.status == "duplicate":
            self.stats.duplicate += 1
        else:
            self.stats.rejected += 1
        self.metrics.handled(result, step.seconds + time.perf_counter() - started, now_us())
        ack = self.notary.ack(step.site, step.gateway, result)
        self.client.publish(GatewayTopics(self.root, step.site, step.gateway).acks, ack, qos=1)
        self._publish_checkpoint()
        self.client.ack(msg.mid, msg.qos)
        if self.on_result is not None:
            self.on_result(msg.topic, result)

    def _proofs(self, msg: _Message, site: str, gateway: str) -> None:
        """Answer a gateway's consistency-proof request on its acknowledgement topic."""
        try:
            answer = self.notary.consistency(msg.payload)
        except DBAPIError as exc:  # the gateway asks again later
            log.error("could not answer a proof request of %s/%s: %s", site, gateway, exc.orig or exc)
            answer = None
        if answer is not None:
            self.client.publish(GatewayTopics(self.root, site, gateway).acks, answer, qos=1)
        self.client.ack(msg.mid, msg.qos)

    def _publish_checkpoint(self) -> None:
        """Publish the log's signed checkpoint (retained) if it grew and the last one is old enough."""
        if not self.connected.is_set():
            return
        try:
            note = self.notary.checkpoint_due()
        except DBAPIError as exc:
            log.error("could not sign a checkpoint: %s", exc.orig or exc)
            return
        if note is not None:
            self.client.publish(store_checkpoint_topic(self.root), note.encode(), qos=1, retain=True)

    def _status(self, msg: _Message, site: str, gateway: str) -> None:
        try:
            self.ingestor.record_status(site, gateway, msg.payload)
        except DBAPIError as exc:  # informational only: not worth holding the queue for
            log.error("could not record the status of %s/%s: %s", site, gateway, exc.orig or exc)
        self.client.ack(msg.mid, msg.qos)

    def _retrying(self, stage: int, site: str, gateway: str, call: Callable[[], _T]) -> _T | None:
        """``call()``, again with back-off while the database fails; ``None`` if stopped meanwhile."""
        delay = RETRY_MIN_S
        while True:
            try:
                result = call()
                self.db_error = None
                return result
            except DBAPIError as exc:
                self.stats.errors += 1
                self.metrics.db_errors.inc()
                self.db_error = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
                log.error(
                    "database error while storing a batch from %s/%s (retrying in %.1f s): %s",
                    site,
                    gateway,
                    delay,
                    exc.orig if exc.orig is not None else exc,
                )
                self._beat(stage)  # retrying is not being stuck
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)


def run_store(
    config: StoreConfig,
    stop: threading.Event,
    *,
    ready: threading.Event | None = None,
    worker: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Serve until ``stop`` is set: the one implementation of ``blackbox store serve``.

    Brings the schema up to date, starts the service (as worker ``worker``: see
    :func:`worker_client_id`), serves ``/metrics`` and ``/health`` if a metrics port is configured
    (``metrics_port`` overrides the configuration's), keeps the readings partitions ahead, and
    speaks systemd's notify protocol: ``READY=1`` once the broker granted the subscription (then
    ``ready`` is set too), ``WATCHDOG=1`` while the ingest worker is responsive (as ``/health``
    judges it), ``STOPPING=1``.
    """
    client_id = worker_client_id(config.mqtt, worker)
    port = metrics_port if metrics_port is not None else worker_metrics_port(config, worker)
    engine = open_store(config.database_url)
    server: MetricsServer | None = None
    try:
        signer = load_signer(config.key_file, config.log_origin)
        service = StoreService(engine, config.mqtt, client_id=client_id, metrics=StoreMetrics(), signer=signer)
        service.metrics.log_size_hook = lambda: TransparencyLog(engine).head()[0]
        if port is not None:
            server = MetricsServer(config.metrics_host, port, service.metrics.registry, service.health)
            server.start()
        ensure_partitions(engine, config.partitions_ahead)
        next_partitions = time.monotonic() + PARTITIONS_EVERY_S
        settle()  # what is built so far lives as long as the worker: out of the cyclic GC's view
        service.start()
        watchdog = systemd.watchdog_interval()
        next_ping = time.monotonic()
        announced = False
        try:
            while not stop.is_set():
                if not announced and service.wait_subscribed(0):
                    announced = True
                    if ready is not None:
                        ready.set()
                    systemd.notify(f"READY=1\nSTATUS=serving as {client_id}")
                if watchdog is not None and time.monotonic() >= next_ping:
                    if service.worker_alive():  # the same test as /health: back from a message within 60 s
                        systemd.notify("WATCHDOG=1")
                    else:
                        log.error("the ingest worker is stuck: not pinging the watchdog")
                    next_ping = time.monotonic() + watchdog
                if time.monotonic() >= next_partitions:
                    next_partitions = time.monotonic() + PARTITIONS_EVERY_S
                    try:
                        ensure_partitions(engine, config.partitions_ahead)
                    except DBAPIError as exc:  # the default partition takes the rows meanwhile
                        log.error("could not create the readings partitions ahead (retrying in an hour): %s",
                                  exc.orig if exc.orig is not None else exc)
                stop.wait(min(0.2, watchdog or 0.2))
        finally:
            systemd.notify("STOPPING=1\nSTATUS=stopping")
            log.info("store stopping: %d received batches not yet handled stay unacknowledged", service.backlog)
            service.stop()
            log.info("store stopped")
    finally:
        if server is not None:
            server.stop()
        engine.dispose()


__all__ = ["ServiceStats", "StoreService", "default_client_id", "run_store", "worker_client_id"]
