"""The agent's MQTT session: status with last will, acknowledgements in, batches and alarms out.

paho runs its own network thread; everything it reports is handed to the asyncio loop with
``call_soon_threadsafe``, so the rest of the agent never runs inside a paho callback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from blackbox.config.uplink import MqttConfig
from blackbox.model import now_us
from blackbox.mqtt import connect_async, disable_nagle, make_client
from blackbox.topics import GatewayTopics

log = logging.getLogger(__name__)

REPEAT_ERROR_LOG_S = 60.0
"""A connection that keeps failing for the same reason is logged again after this many seconds."""


class UplinkSession:
    def __init__(self, cfg: MqttConfig, topics: GatewayTopics, client_id: str, loop: asyncio.AbstractEventLoop,
                 on_ack: Callable[[bytes], None], on_connected: Callable[[], None]) -> None:
        self.cfg = cfg
        self.topics = topics
        self._loop = loop
        self._on_ack = on_ack
        self._on_connected = on_connected
        self.connected = False
        self._stopping = False
        self.last_error: str | None = None
        self._logged_error: tuple[str, float] | None = None
        self._client = make_client(cfg, client_id)
        self._client.will_set(topics.status, _status("offline", "connection lost"), qos=1, retain=True)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_message = self._handle_message

    def start(self) -> None:
        connect_async(self._client, self.cfg)
        self._client.loop_start()

    def stop(self) -> None:
        """Say goodbye on the status topic, then disconnect (the will is not sent on a clean exit)."""
        self._stopping = True
        if self.connected:
            info = self._client.publish(self.topics.status, _status("offline", "stopped"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish the offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a QoS 1 message. Delivery is proven by the store's ack, never by PUBACK."""
        return self._client.publish(topic, payload, qos=1, retain=retain)

    # -- paho thread -------------------------------------------------------------------------

    def _handle_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                        _props: Any = None) -> None:
        if reason.is_failure:
            self._loop.call_soon_threadsafe(self._set_state, False, f"broker refused connection: {reason}")
            return
        disable_nagle(client)
        client.subscribe(self.topics.acks, qos=1)
        client.publish(self.topics.status, _status("online"), qos=1, retain=True)
        self._loop.call_soon_threadsafe(self._set_state, True, None)

    def _handle_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                           _props: Any = None) -> None:
        self._loop.call_soon_threadsafe(self._set_state, False, f"disconnected: {reason}")

    def _handle_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception is the reason
        exc = sys.exc_info()[1]
        reason = (exc.strerror or str(exc) or type(exc).__name__) if isinstance(exc, OSError) else "no answer"
        self._loop.call_soon_threadsafe(self._set_state, False, f"cannot connect to the broker at "
                                        f"{self.cfg.host}:{self.cfg.port}: {reason}")

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.acks:
            self._loop.call_soon_threadsafe(self._on_ack, bytes(msg.payload))

    # -- loop thread -------------------------------------------------------------------------

    def _set_state(self, connected: bool, error: str | None) -> None:
        was = self.connected
        self.connected = connected
        if connected or not (self.last_error or "").startswith("broker refused"):
            self.last_error = error  # a refusal is the news; the disconnect that follows it is not
        if connected:
            self._logged_error = None
        if connected and not was:
            log.info("uplink connected to %s:%s", self.cfg.host, self.cfg.port)
            self._on_connected()
        elif not connected and was and not self._stopping:
            log.warning("uplink lost: %s", error)
        elif error and error.startswith("broker refused"):
            log.error("uplink to %s:%s: %s", self.cfg.host, self.cfg.port, error)
        elif error and error.startswith("cannot connect") and self._worth_logging(error):
            log.error("uplink %s; retrying (waits double up to uplink.mqtt.reconnect_max = %d s)", error,
                      self.cfg.reconnect_max)

    def _worth_logging(self, error: str) -> bool:
        """A failing connection is logged when its reason changes, and again every minute while it lasts."""
        now = time.monotonic()
        if self._logged_error is not None and self._logged_error[0] == error \
                and now - self._logged_error[1] < REPEAT_ERROR_LOG_S:
            return False
        self._logged_error = (error, now)
        return True


def _status(state: str, reason: str | None = None) -> bytes:
    return orjson.dumps({"state": state, "reason": reason, "ts_us": now_us()})
