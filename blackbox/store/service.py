"""The store's MQTT service: receive sealed batches, ingest them, acknowledge after the commit.

Delivery guarantees:

* The subscription is QoS 1 in a persistent session (fixed client id, ``clean_start=False`` with a
  session expiry on MQTT 5, ``clean_session=False`` on 3.1.1): batches published while the store
  is down are queued by the broker and delivered when it comes back.
* Incoming messages are acknowledged to the broker by hand (``manual_ack``), only after the
  database commit and after the application ack has been handed to paho. A crash anywhere before
  leaves the message unacknowledged, so the broker delivers it again and the ingest answers
  "duplicate" if it had been stored.
* paho's network thread only queues messages; a worker thread does the verification and the SQL.
  The queue never grows beyond the broker's in-flight window, because nothing is acknowledged
  before it is processed. If the database fails, the worker retries the same message with back-off
  instead of rejecting it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from blackbox.config import MqttConfig, StoreConfig
from blackbox.mqtt import connect_async, disable_nagle, make_client
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor, IngestResult
from blackbox.topics import GatewayTopics, parse_gateway_topic, store_batch_filter, store_status_filter

log = logging.getLogger("blackbox.store.service")

SESSION_EXPIRY_S = 30 * 24 * 3600
"""How long the broker keeps the store's session (and queues batches for it) while it is away."""

QUEUE_SIZE = 1000
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass
class ServiceStats:
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: int = 0


def default_client_id() -> str:
    """A client id that stays the same across restarts of the store on this host."""
    return f"blackbox-store-{socket.gethostname()}"[:64]


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
    ) -> None:
        self.engine = engine
        self.config = mqtt
        self.root = root if root is not None else mqtt.topic_root
        self.ingestor = ingestor if ingestor is not None else Ingestor(engine)
        self.on_result = on_result
        self.stats = ServiceStats()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self._v5 = mqtt.protocol == "5"
        self._filter = store_batch_filter(self.root, shared=self._v5)
        self._queue: queue.Queue[_Message | None] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._sub_mid: int | None = None
        self._worker: threading.Thread | None = None
        self.client = self._make_client()

    # -- MQTT session ------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = make_client(self.config, self.config.client_id or default_client_id(), manual_ack=True)
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
        self._worker = threading.Thread(target=self._work, name="blackbox-store-ingest", daemon=True)
        self._worker.start()
        cfg = self.config
        connect_async(self.client, cfg, session_expiry=SESSION_EXPIRY_S)
        self.client.loop_start()
        log.info(
            "store connecting to %s:%s (MQTT %s) as %s, filter %s",
            cfg.host,
            cfg.port,
            cfg.protocol,
            cfg.client_id or default_client_id(),
            self._filter,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and stop the worker. Messages not yet handled stay unacknowledged at the broker."""
        self._stopping.set()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            if self._worker is not None:
                # unblock the worker: it exits at the sentinel (or at once if it is retrying)
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(None)
                self._worker.join(timeout)
                self._worker = None
            self.subscribed.clear()
            self.connected.clear()

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the broker granted the subscription (after each reconnect too)."""
        return self.subscribed.wait(timeout)

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
        topics = [(self._filter, 1), (store_status_filter(self.root), 1)]
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
        log.info("store subscribed to %s", self._filter)

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        # Blocks paho's thread only if the worker is QUEUE_SIZE messages behind, which the broker's
        # in-flight window prevents: nothing is acknowledged before it has been processed.
        self._queue.put(_Message(message.topic, bytes(message.payload), message.mid, message.qos))

    # -- worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping.is_set():
                return
            try:
                self._process(item)
            except Exception:  # a bug must not kill the worker; the message stays unacknowledged
                self.stats.errors += 1
                log.exception("store failed to process a message on %s", item.topic)

    def _process(self, msg: _Message) -> None:
        parsed = parse_gateway_topic(self.root, msg.topic)
        if parsed is not None and parsed[2] == "status":
            self._status(msg, parsed[0], parsed[1])
            return
        if parsed is None or parsed[2] != "batches":
            log.warning("ignoring a message on %s: not a batch topic", msg.topic)
            self.client.ack(msg.mid, msg.qos)
            return
        site, gateway = parsed[0], parsed[1]
        result = self._ingest(msg, site, gateway)
        if result is None:
            return  # stopping while the database was unavailable: the broker will deliver it again
        if result.status == "stored":
            self.stats.stored += 1
        elif result.status == "duplicate":
            self.stats.duplicate += 1
        else:
            self.stats.rejected += 1
        ack = orjson.dumps(result.ack())
        self.client.publish(GatewayTopics(self.root, site, gateway).acks, ack, qos=1)
        self.client.ack(msg.mid, msg.qos)
        if self.on_result is not None:
            self.on_result(msg.topic, result)

    def _status(self, msg: _Message, site: str, gateway: str) -> None:
        try:
            self.ingestor.record_status(site, gateway, msg.payload)
        except DBAPIError as exc:  # informational only: not worth holding the queue for
            log.error("could not record the status of %s/%s: %s", site, gateway, exc.orig or exc)
        self.client.ack(msg.mid, msg.qos)

    def _ingest(self, msg: _Message, site: str, gateway: str) -> IngestResult | None:
        delay = RETRY_MIN_S
        while True:
            try:
                return self.ingestor.handle(msg.payload, site, gateway, topic=msg.topic)
            except DBAPIError as exc:
                self.stats.errors += 1
                log.error(
                    "database error while storing a batch from %s/%s (retrying in %.1f s): %s",
                    site,
                    gateway,
                    delay,
                    exc.orig if exc.orig is not None else exc,
                )
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)


def run_store(config: StoreConfig, stop: threading.Event, *, ready: threading.Event | None = None) -> None:
    """Bring the database schema up to date and serve until ``stop`` is set (the CLI's ``store serve``).

    ``ready`` is set once the broker has granted the subscription (for systemd's ``READY=1``).
    """
    engine = open_store(config.database_url)
    try:
        service = StoreService(engine, config.mqtt)
        service.start()
        try:
            while not stop.is_set():
                if ready is not None and not ready.is_set() and service.wait_subscribed(0):
                    ready.set()
                stop.wait(0.2 if ready is not None and not ready.is_set() else 1.0)
        finally:
            service.stop()
    finally:
        engine.dispose()


__all__ = ["ServiceStats", "StoreService", "default_client_id", "run_store"]
