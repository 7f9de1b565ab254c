"""A cancelled poller stops, whatever it was waiting for when the cancellation came.

Python 3.11's ``asyncio.wait_for`` returns the awaited result when a cancellation arrives in the
same loop iteration, and the cancellation is lost; a poller built on it went on reconnecting
forever once in a few dozen cancellations. These tests cancel pollers at the moments that lost it
(the instant a real listening socket accepts the connection, a few milliseconds into a connect or
read that the peer never answers, while a close hangs) many times over, and require each poller to
be gone within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from acquisition_helpers import Collector

from blackbox.agent.poller import SourcePoller
from drivers.base import Driver
from drivers.modbus import ModbusDriver, ModbusSourceConfig
from drivers.opcua import OpcUaDriver, OpcUaSourceConfig

ROUNDS = 200
STOP_WITHIN_S = 1.0
TAGS = [{"name": "a", "address": "hr:0", "type": "int16", "category": "process", "unit": "U"}]
UA_TAGS = [{"name": "a", "address": "ns=2;s=a", "type": "Double", "category": "process", "unit": "U"}]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


@contextlib.asynccontextmanager
async def listening(handler: Handler) -> AsyncIterator[int]:
    """A real TCP port on 127.0.0.1 whose accepted connections go to ``handler``; yields the port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def modbus(port: int, timeout: float = 5.0) -> ModbusDriver:
    return ModbusDriver(ModbusSourceConfig.model_validate({
        "name": "silent", "protocol": "modbus", "host": "127.0.0.1", "port": port, "timeout": timeout,
        "reconnect_min": 0.001, "reconnect_max": 0.002, "tags": TAGS}))


def opcua(port: int) -> OpcUaDriver:
    return OpcUaDriver(OpcUaSourceConfig.model_validate({
        "name": "silent", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}", "timeout": 5.0,
        "reconnect_min": 0.001, "reconnect_max": 0.002, "tags": UA_TAGS}))


async def join(task: asyncio.Task[None], poller: SourcePoller, what: str) -> None:
    """Fail unless the poller's (cancelled) task ends within :data:`STOP_WITHIN_S`."""
    done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN_S)
    if not done:  # stop the runaway (it ignored the cancellation) before failing
        poller.request_stop()
        task.cancel()
        await asyncio.wait({task}, timeout=30)
        raise AssertionError(f"a poller cancelled {what} was still running {STOP_WITHIN_S} s later")
    assert task.cancelled(), task.exception()


class Rounds:
    """One poller at a time against a shared server: the server's handler cancels it when told to."""

    def __init__(self) -> None:
        self.accepted = 0
        self.cancel_on_accept: int | None = None  # cancel the poller on this accept (1 = the first)
        self.task: asyncio.Task[None] | None = None
        self.writers: list[asyncio.StreamWriter] = []

    def start(self, poller: SourcePoller, cancel_on_accept: int | None) -> asyncio.Task[None]:
        self.accepted = 0
        self.cancel_on_accept = cancel_on_accept
        self.task = asyncio.create_task(poller.run())
        return self.task

    def on_accept(self) -> None:
        self.accepted += 1
        if self.accepted == self.cancel_on_accept and self.task is not None:
            self.task.cancel()  # in the very iteration the client's connect completes

    async def silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept, read whatever comes, never answer; the connection stays open."""
        self.writers.append(writer)
        self.on_accept()
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    async def hang_up(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept and close at once: the client connects, then fails before a first cycle."""
        self.on_accept()
        writer.close()

    def close_all(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()


async def run_rounds(rounds: Rounds, make: Callable[[], Driver], what: str, accepts: int = 1) -> None:
    """:data:`ROUNDS` pollers, cancelled on one of the first ``accepts`` accepts or a few milliseconds after one."""
    rng = random.Random(7)
    for i in range(ROUNDS):
        poller = SourcePoller(make(), Collector())
        on_accept = rng.randint(1, accepts) if i % 2 == 0 else None
        task = rounds.start(poller, on_accept)
        if on_accept is None:
            async with asyncio.timeout(10):
                while rounds.accepted == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(rng.uniform(0, 0.01))
        else:  # the handler cancels it
            async with asyncio.timeout(10):
                while rounds.accepted < on_accept:
                    await asyncio.sleep(0)
            await join(task, poller, f"on accept {on_accept} ({what}, round {i})")
            rounds.close_all()
            continue
        task.cancel()
        await join(task, poller, f"{what}, round {i}")
        rounds.close_all()


async def test_a_modbus_poller_cancelled_mid_read_on_a_silent_device_stops() -> None:
    rounds = Rounds()
    async with listening(rounds.silent) as port:
        await run_rounds(rounds, lambda: modbus(port), "waiting for a Modbus answer")


async def test_an_opcua_poller_cancelled_mid_connect_on_a_silent_server_stops() -> None:
    rounds = Rounds()
    async with listening(rounds.silent) as port:
        await run_rounds(rounds, lambda: opcua(port), "waiting for the OPC UA server's Acknowledge")


async def test_a_poller_cancelled_while_reconnecting_to_a_device_that_hangs_up_stops() -> None:
    rounds = Rounds()
    async with listening(rounds.hang_up) as port:
        await run_rounds(rounds, lambda: modbus(port), "reconnecting to a device that hangs up", accepts=3)


class GoodbyeNeverAnswered(ModbusDriver):
    """A real Modbus driver whose close waits for a goodbye the device never sends."""

    async def close(self) -> None:
        if self._link is not None:
            await asyncio.Event().wait()
        await super().close()


async def test_a_poller_whose_source_hangs_on_close_stops_when_cancelled() -> None:
    rounds = Rounds()
    async with listening(rounds.silent) as port:
        for i in range(5):
            driver = GoodbyeNeverAnswered(modbus(port, timeout=0.1).settings)
            poller = SourcePoller(driver, Collector())
            task = rounds.start(poller, None)
            async with asyncio.timeout(10):
                while rounds.accepted == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.05 * i)  # mid-read, as the read times out, while closing, while waiting
            task.cancel()
            await join(task, poller, f"with a close that never returns, round {i}")
            rounds.close_all()
