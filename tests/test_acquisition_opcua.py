"""OPC UA acquisition at production depth, against the simulated line and real asyncua servers.

Security (Basic256Sha256 Sign / SignAndEncrypt) is in ``tests/drivers/test_opcua_security.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from acquisition_helpers import Collector, good, sim_source
from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from waiting import eventually

from blackbox.agent.poller import SourcePoller
from blackbox.model import Quality
from blackbox.sim import BadQuality, Simulator
from drivers.opcua import OpcUaDriver, OpcUaSourceConfig


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=0, opcua_port=0, modbus_port=0) as simulator:
        yield simulator


def line_source(sim: Simulator, **settings: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(sim_source(sim, "opcua", **settings))


async def test_subscription_delivers_initial_values_then_changes(sim: Simulator) -> None:
    # the model's steps block this loop for seconds on a loaded machine: with the default watchdog the
    # driver would rebuild the "silent" subscription, and the new one delivers initial values again
    config = line_source(sim, mode="subscription", publishing_interval=0.05, watchdog=600)
    raw = sim_source(sim, "opcua")["tags"]
    config = OpcUaSourceConfig.model_validate({
        **config.model_dump(mode="json", exclude_none=True),
        "tags": [*raw, {"name": "EM-01.ghost", "address": "s=EM-01.no_such_node", "type": "Double",
                        "category": "process", "unit": "EM-01"}]})
    driver = OpcUaDriver(config)
    await driver.connect()
    try:
        await driver.subscribe()
        initial: dict[str, Any] = {}
        while len(initial) < len(config.tags):  # the initial values may come in several notifications
            initial |= {s.tag: s for s in await asyncio.wait_for(driver.changes(), timeout=5)}
        assert (initial["EM-01.ghost"].quality, initial["EM-01.ghost"].reason) == (Quality.BAD, "BadNodeIdUnknown")
        others = [s for n, s in initial.items() if n != "EM-01.ghost"]
        assert good(others) and all(s.source_ts_us for s in others)
        assert initial["EM-01.phase"].value == sim.phase

        sim.faults.add(BadQuality(tag="EM-01.temperature"))
        await sim.advance(5 * 3600)  # into production: many values change
        changed: dict[str, Any] = {}
        while "EM-01.temperature" not in changed or "EM-01.phase" not in changed:
            changed |= {s.tag: s for s in await asyncio.wait_for(driver.changes(), timeout=5)}
        assert changed["EM-01.phase"].value == sim.phase != initial["EM-01.phase"].value
        assert (changed["EM-01.temperature"].quality, changed["EM-01.temperature"].reason) == (
            Quality.BAD, "BadSensorFailure")
        assert "EM-01.ghost" not in changed  # an unknown node stays out of the way
        assert driver.health.resubscribed == 0
        assert driver.health.details["notifications"] >= len(others) + 2
        assert driver.health.lost == 0 and driver.health.tags_bad == 2
    finally:
        await driver.close()


async def test_an_absolute_deadband_is_applied_by_the_server(sim: Simulator) -> None:
    driver = OpcUaDriver(line_source(sim, mode="subscription", publishing_interval=0.05,  # watchdog: as above
                                     deadband_type="absolute", deadband_value=1e9, watchdog=600))
    await driver.connect()
    try:
        await driver.subscribe()
        first: dict[str, Any] = {}
        while len(first) < len(driver.settings.tags):
            first |= {s.tag: s for s in await asyncio.wait_for(driver.changes(), timeout=5)}
        await sim.advance(5 * 3600)
        changed: dict[str, Any] = {}
        while "EM-01.phase" not in changed:
            changed |= {s.tag: s for s in await asyncio.wait_for(driver.changes(), timeout=5)}
    finally:
        await driver.close()
    # text changes are reported; no number moved by a billion
    assert not [n for n, s in changed.items() if isinstance(s.value, float)], changed
    assert driver.health.details["deadband_refused"] == [] and driver.health.resubscribed == 0


@pytest.mark.slow
async def test_a_silent_subscription_is_rebuilt_by_the_watchdog(sim: Simulator) -> None:
    sink = Collector()
    poller = SourcePoller(OpcUaDriver(line_source(sim, mode="subscription", publishing_interval=0.05,
                                                  watchdog=0.5)), sink)
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: len(sink.samples("EM-01.phase")) == 1, 5, "the initial values")
        assert await sim.drop_subscriptions() == 1
        await eventually(lambda: sink.events("source.resubscribed"), 5, "the watchdog's rebuild")
        await eventually(lambda: len(sink.samples("EM-01.phase")) == 2, 5, "initial values of the new subscription")
        await sim.advance(5 * 3600)
        await eventually(lambda: sink.samples("EM-01.phase")[-1].value == sim.phase, 5, "changes flowing again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not sink.events("source.disconnected")  # the session stayed up all along
    assert poller.driver.health.resubscribed == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["poll", "subscription"])
async def test_readings_resume_after_a_server_restart_without_restarting_the_agent(sim: Simulator,
                                                                                  mode: str) -> None:
    sink = Collector()
    settings: dict[str, Any] = {"mode": "subscription", "publishing_interval": 0.05} if mode == "subscription" else {}
    poller = SourcePoller(OpcUaDriver(line_source(sim, **settings)), sink)
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: sink.samples("EM-01.phase"), 5, "the first readings")
        # the PLC reboots; its new configuration puts the cream line at another namespace index
        await sim.restart_server("opcua", downtime=0.3, extra_namespaces=2)
        await sim.advance(5 * 3600)
        await eventually(lambda: sink.samples("EM-01.phase")[-1].value == sim.phase, 15,
                         "readings of the restarted server")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    kinds = [e.type for e in sink.events() if e.type.startswith("source.")]
    assert kinds == ["source.connected", "source.disconnected", "source.connected"]
    after = [s for s in sink.samples() if s.tag == "EM-01.phase"][-1]
    assert after.quality is Quality.GOOD


@contextlib.asynccontextmanager
async def server_with_nodes(count: int) -> AsyncIterator[tuple[Server, str, list[int]]]:
    """An asyncua server with ``count`` Double nodes; yields it, its endpoint and the sizes of the Reads it got."""
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    idx = await server.register_namespace("urn:blackbox:test:big")
    for i in range(count):
        await server.nodes.objects.add_variable(ua.NodeId(ua.String(f"v{i:04d}"), ua.Int16(idx)), f"v{i:04d}",
                                                ua.Variant(i / 4, ua.VariantType.Double))
    reads: list[int] = []

    def count_reads(event: ServerItemCallback, _dispatcher: Any) -> None:
        nodes = event.request_params.NodesToRead
        if any(rv.NodeId.NamespaceIndex == idx for rv in nodes):
            reads.append(len(nodes))

    server.subscribe_server_callback(CallbackType.PreRead, count_reads)
    await server.start()
    assert server.bserver is not None  # started
    try:
        yield server, f"opc.tcp://127.0.0.1:{server.bserver.port}", reads
    finally:
        clock = server.iserver.time_task
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            server.iserver.time_task = None
        await server.stop()


@pytest.mark.slow
async def test_2000_nodes_are_read_in_one_read_or_the_servers_limit() -> None:
    async with server_with_nodes(2000) as (server, endpoint, reads):
        config = OpcUaSourceConfig.model_validate({
            "name": "big", "protocol": "opcua", "endpoint": endpoint, "namespace_uri": "urn:blackbox:test:big",
            "tags": [{"name": f"v{i:04d}", "address": f"s=v{i:04d}", "type": "Double", "category": "process",
                      "unit": "X"} for i in range(2000)]})
        driver = OpcUaDriver(config)
        await driver.connect()
        try:
            reads.clear()
            samples = await driver.read()
            assert reads == [2000] and driver.health.requests_per_cycle == 1
            assert [s.value for s in samples] == [i / 4 for i in range(2000)]
        finally:
            await driver.close()
        # a server limiting Reads to 500 nodes gets four per cycle
        max_nodes_per_read = ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        await server.get_node(ua.NodeId(max_nodes_per_read)).write_value(ua.Variant(500, ua.VariantType.UInt32))
        await driver.connect()
        try:
            reads.clear()
            samples = await driver.read()
        finally:
            await driver.close()
        assert reads == [500] * 4 and driver.health.requests_per_cycle == 4
        assert good(samples) and len(samples) == 2000

