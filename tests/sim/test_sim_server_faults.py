"""Server faults of the simulator, seen by plain pymodbus and asyncua clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient
from waiting import eventually

from blackbox.sim import Drift, IllegalAddress, Simulator, Spike, make_fault


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=0, opcua_port=0, modbus_port=0) as simulator:
        yield simulator


async def test_an_illegal_address_block_is_refused_only_where_it_is(sim: Simulator) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port, timeout=1, retries=0)
    await client.connect()
    try:
        fault = sim.faults.add(IllegalAddress(table="hr", start=32, count=8))
        assert (await client.read_holding_registers(0, count=45, device_id=1)).exception_code == 2
        assert (await client.read_holding_registers(39, count=2, device_id=1)).exception_code == 2
        assert not (await client.read_holding_registers(0, count=32, device_id=1)).isError()
        assert not (await client.read_holding_registers(40, count=5, device_id=1)).isError()
        assert not (await client.read_input_registers(30, count=6, device_id=1)).isError()  # another table
        sim.faults.remove(fault)
        assert not (await client.read_holding_registers(0, count=45, device_id=1)).isError()
    finally:
        client.close()
    with pytest.raises(ValueError, match="register tables"):
        IllegalAddress(table="co")


async def test_a_modbus_disconnect_refuses_connections_until_it_ends(sim: Simulator) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port, timeout=1, retries=0, reconnect_delay=0)
    await client.connect()
    cut = asyncio.create_task(sim.disconnect("modbus", 0.5))
    try:
        await eventually(lambda: not client.connected, 1.0, "the server to drop the connection")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", sim.modbus_port)
        await cut
        assert await client.connect()
        assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
    finally:
        client.close()


@pytest.mark.slow
async def test_an_opcua_restart_loses_sessions_and_may_renumber_namespaces(sim: Simulator) -> None:
    before = Client(sim.opcua_endpoint, timeout=2)
    await before.connect()
    index = await before.get_namespace_index(sim.namespace_uri)
    await sim.restart_server("opcua", extra_namespaces=2)
    with pytest.raises((OSError, asyncio.TimeoutError, ConnectionError)):
        await before.get_namespace_array()
    before.disconnect_socket()
    async with Client(sim.opcua_endpoint, timeout=2) as after:
        assert await after.get_namespace_index(sim.namespace_uri) == index + 2


def test_make_fault_takes_the_faults_own_parameters() -> None:
    drift = make_fault("drift", tag="PW-01.toc", rate=0.5)
    assert isinstance(drift, Drift) and (drift.tag, drift.rate) == ("PW-01.toc", 0.5)
    spike = make_fault("spike", tag="CR-01.humidity")
    assert isinstance(spike, Spike) and spike.magnitude == 10.0
    hole = make_fault("illegal_address", start=50, count=2)
    assert isinstance(hole, IllegalAddress) and hole.describe() == "IllegalAddress(hr:50-51)"
    with pytest.raises(ValueError, match=r"fault 'spike'.*parameters: magnitude, width"):
        make_fault("spike", tag="CR-01.humidity", rate=1.0)
    with pytest.raises(ValueError, match="takes no parameters"):
        make_fault("door_open", width=3)


@pytest.mark.slow
async def test_an_opcua_disconnect_drops_clients_and_then_listens_again(sim: Simulator) -> None:
    client = Client(sim.opcua_endpoint, timeout=2)
    await client.connect()
    cut = asyncio.create_task(sim.disconnect("opcua", 0.5))
    try:
        await eventually(lambda: client.uaclient.protocol is None or client.uaclient.protocol.is_closed, 1.0,
                         "the server to drop the session's connection")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", sim.opcua_port)
        await cut
    finally:
        client.disconnect_socket()
    async with Client(sim.opcua_endpoint, timeout=2) as again:
        assert await again.get_namespace_index(sim.namespace_uri) >= 2
