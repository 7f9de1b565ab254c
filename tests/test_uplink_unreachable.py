"""A broker that cannot be reached is loud: a log line naming the address and the reason, and
``status`` shows it as the uplink's last error, while paho keeps retrying."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from waiting import eventually

from blackbox.config import MqttConfig
from blackbox.topics import GatewayTopics
from blackbox.uplink.session import UplinkSession


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_broker_is_logged_and_shown(caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    cfg = MqttConfig(host="127.0.0.1", port=port, reconnect_max=1)
    session = UplinkSession(cfg, GatewayTopics("bb-unreachable", "S1", "gw-1"), "bb-unreachable-gw-1",
                            asyncio.get_running_loop(), on_ack=lambda _b: None, on_connected=lambda: None)
    attempts = 0  # failed connection attempts, counted where the session learns of them
    set_state = session._set_state

    def counting(connected: bool, error: str | None) -> None:
        nonlocal attempts
        attempts += bool(error and error.startswith("cannot connect"))
        set_state(connected, error)

    monkeypatch.setattr(session, "_set_state", counting)
    caplog.set_level(logging.ERROR, logger="blackbox.uplink.session")
    session.start()
    try:
        await eventually(lambda: session.last_error, 10, "the uplink's last error")
        assert session.last_error == f"cannot connect to the broker at 127.0.0.1:{port}: Connection refused"
        assert not session.connected
        await eventually(lambda: caplog.records, 5, "an error logged")
        message = caplog.records[0].getMessage()
        assert f"127.0.0.1:{port}" in message and "Connection refused" in message and "retrying" in message
        seen = attempts
        await eventually(lambda: attempts >= seen + 2, 10, "two more connection attempts")
        # the same reason again: not logged again
        assert len(caplog.records) == 1
    finally:
        session.stop()
