"""The simulator's OPC UA and Modbus servers serve the model's values, read with plain clients."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient
from sim_helpers import SHORT

from blackbox.model import Value
from blackbox.sim import Simulator, run_simulator
from blackbox.sim.faults import BadQuality
from blackbox.sim.process import Snapshot
from blackbox.sim.recipe import IDLE, PHASES
from blackbox.sim.tags import NAMESPACE_URI, SimTag, modbus_tags, opcua_tags

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[Simulator]:
    """One simulator stepped by hand (speed 0) on free ports, shared by this module's tests."""
    async with Simulator(seed=11, speed=0, batches=None, durations=SHORT, opcua_port=0, modbus_port=0) as simulator:
        yield simulator


async def advance_to(sim: Simulator, phase: str) -> None:
    """Step the model into ``phase`` (batches repeat forever), then publish."""
    while sim.phase == phase:
        sim.model.step()
    while sim.phase != phase:
        sim.model.step()
        assert sim.model.step_no < 100_000
    await sim.advance(0)


@pytest_asyncio.fixture(loop_scope="module")
async def modbus(sim: Simulator) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port, timeout=2, retries=0)
    assert await client.connect()
    yield client
    client.close()


def decode(tag: SimTag, regs: list[int]) -> Value:
    """The test's own decoding: big-endian words, ASCII strings padded with NUL."""
    raw = struct.pack(f">{len(regs)}H", *regs)
    if tag.type == "string":
        return raw.rstrip(b"\x00").decode("ascii")
    number: float | int = struct.unpack({"float32": ">f", "uint32": ">I", "uint16": ">H"}[tag.type], raw)[0]
    return number


async def read_modbus(client: AsyncModbusTcpClient, unit: int) -> dict[str, Value]:
    hr = await client.read_holding_registers(0, count=64, device_id=unit)
    ir = await client.read_input_registers(0, count=64, device_id=unit)
    co = await client.read_coils(0, count=16, device_id=unit)
    di = await client.read_discrete_inputs(0, count=16, device_id=unit)
    for response in (hr, ir, co, di):
        assert not response.isError(), response
    tables = {"hr": hr.registers, "ir": ir.registers, "co": co.bits, "di": di.bits}
    values: dict[str, Value] = {}
    for tag in modbus_tags():
        block = tables[tag.table]
        if tag.table in ("co", "di"):
            values[tag.name] = bool(block[tag.register])
        else:
            values[tag.name] = decode(tag, list(block[tag.register:tag.register + tag.size]))
    return values


def node_id(name: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(ns))


def value_of(dv: ua.DataValue) -> object:
    assert dv.Value is not None
    return dv.Value.Value


def is_good(dv: ua.DataValue) -> bool:
    return dv.StatusCode is not None and dv.StatusCode.is_good()


def assert_same(tag: SimTag, served: Value, expected: Value) -> None:
    if tag.type == "float32":
        assert isinstance(served, float) and isinstance(expected, float)
        assert served == pytest.approx(expected, rel=1e-6, abs=1e-6), tag.name
    else:
        assert served == expected, tag.name


async def read_opcua(sim: Simulator) -> tuple[dict[str, ua.DataValue], int]:
    async with Client(sim.opcua_endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        nodes = [client.get_node(node_id(t.name, ns)) for t in opcua_tags()]
        values = await client.read_attributes(nodes)
        return {t.name: dv for t, dv in zip(opcua_tags(), values, strict=True)}, ns


async def test_ports_are_picked_free_and_reported(sim: Simulator) -> None:
    assert sim.opcua_port > 0 and sim.modbus_port > 0 and sim.opcua_port != sim.modbus_port
    assert sim.opcua_endpoint == f"opc.tcp://127.0.0.1:{sim.opcua_port}"


async def test_opcua_serves_the_model_values_by_string_node_id(sim: Simulator) -> None:
    await advance_to(sim, "emulsify")
    served, ns = await read_opcua(sim)
    assert ns >= 2
    for tag in opcua_tags():
        dv = served[tag.name]
        assert dv.StatusCode is not None and dv.StatusCode.is_good(), tag.name
        assert dv.Value is not None
        expected_type = {"Double": ua.VariantType.Double, "String": ua.VariantType.String}[tag.type]
        assert dv.Value.VariantType == expected_type, tag.name
        assert dv.Value.Value == sim.snapshot[tag.name], tag.name
        assert dv.SourceTimestamp is not None
    assert value_of(served["EM-01.batch_id"]) == sim.current_batch
    assert value_of(served["EM-01.phase"]) == sim.phase


async def test_modbus_serves_the_model_values(sim: Simulator, modbus: AsyncModbusTcpClient) -> None:
    await advance_to(sim, "water_heat")  # the weighing records are set
    served = await read_modbus(modbus, sim.modbus_unit_id)
    assert served["WS-01.weigh_count"] != 0 and served["WS-01.material_code"] != ""
    for tag in modbus_tags():
        assert_same(tag, served[tag.name], sim.snapshot[tag.name])


async def test_every_step_republishes(sim: Simulator, modbus: AsyncModbusTcpClient) -> None:
    first = await read_modbus(modbus, sim.modbus_unit_id)
    await sim.advance(1)
    second = await read_modbus(modbus, sim.modbus_unit_id)
    for tag in modbus_tags():
        assert_same(tag, second[tag.name], sim.snapshot[tag.name])
    assert [n for n in first if first[n] != second[n]], "nothing changed in a step"


async def test_modbus_refuses_writes_and_addresses_beyond_its_tables(sim: Simulator,
                                                                     modbus: AsyncModbusTcpClient) -> None:
    beyond = await modbus.read_holding_registers(60, count=10, device_id=sim.modbus_unit_id)
    assert beyond.isError()
    write = await modbus.write_register(0, 1234, device_id=sim.modbus_unit_id)
    assert write.isError()
    coil = await modbus.write_coil(0, False, device_id=sim.modbus_unit_id)
    assert coil.isError()


async def test_bad_quality_reaches_both_protocols(sim: Simulator, modbus: AsyncModbusTcpClient) -> None:
    ids = [sim.faults.add(BadQuality(tag="EM-01.temperature")), sim.faults.add(BadQuality(tag="WT-01.temperature"))]
    try:
        await sim.advance(1)
        served, _ = await read_opcua(sim)
        status = served["EM-01.temperature"].StatusCode
        assert status is not None and status.value == ua.StatusCodes.BadSensorFailure
        assert is_good(served["EM-01.jacket_temperature"])
        values = await read_modbus(modbus, sim.modbus_unit_id)
        wt, ot = values["WT-01.temperature"], values["OT-01.temperature"]
        assert isinstance(wt, float) and math.isnan(wt)
        assert isinstance(ot, float) and not math.isnan(ot)
    finally:
        for fault_id in ids:
            sim.faults.remove(fault_id)
    await sim.advance(1)
    served, _ = await read_opcua(sim)
    assert is_good(served["EM-01.temperature"])
    assert value_of(served["EM-01.temperature"]) == sim.snapshot["EM-01.temperature"]


async def test_a_running_simulator_finishes_its_batches_and_clients_see_the_phases() -> None:
    """Real time: speed 300 runs the 305 s short batch in about 1 s."""
    seen: list[str] = []
    async with Simulator(seed=1, speed=300.0, durations=SHORT, opcua_port=0, modbus_port=0, tick=0.01) as sim:
        async with Client(sim.opcua_endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            phase = client.get_node(node_id("EM-01.phase", ns))
            done = asyncio.ensure_future(sim.batches_done.wait())
            while not done.done():
                value = await phase.read_value()
                if not seen or seen[-1] != value:
                    seen.append(value)
                await asyncio.wait([done], timeout=0.01)
            await asyncio.wait_for(sim.wait(), 1)
            assert await phase.read_value() == IDLE
        assert sim.model.batches_completed == 1 and sim.phase == IDLE and sim.current_batch is None
    # polled every 10 ms (3 simulated s), a client sees the 30 s phases in order; a stalled machine
    # may make it miss one (or connect after the 5 s changeover is over), never reorder them
    positions = [PHASES.index(p) for p in seen if p != IDLE]
    assert positions == sorted(set(positions)) and len(positions) >= 7


async def test_a_simulator_behind_its_speed_steps_in_short_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    """However far the model falls behind (here a step costs over 1 ms and 20,000 are due each second),
    it steps in short bursts, between which the servers and the rest of the loop get their turn."""
    async with Simulator(seed=1, speed=20_000.0, batches=None, durations=SHORT, opcua_port=0, modbus_port=0) as sim:
        step = sim.model.step

        def slow_step() -> Snapshot:
            time.sleep(0.001)
            return step()

        monkeypatch.setattr(sim.model, "step", slow_step)
        bursts: list[int] = []
        last = sim.model.step_no
        while len(bursts) < 10:
            await asyncio.sleep(0)  # back after whatever else ran on the loop
            if sim.model.step_no != last:
                bursts.append(sim.model.step_no - last)
                last = sim.model.step_no
                assert bursts[-1] <= 100, f"{bursts[-1]} steps (over 0.1 s) without the loop getting a turn"
        assert sim.model.step_no * sim.model.dt < 20_000, "the model is behind its speed, as intended"


async def test_run_simulator_returns_when_its_batches_are_done() -> None:
    ready: list[Simulator] = []
    await asyncio.wait_for(run_simulator(seed=1, speed=2000.0, batches=1, opcua_port=0, modbus_port=0,
                                         durations=SHORT, on_ready=ready.append), timeout=60)
    assert len(ready) == 1 and ready[0].batches_done.is_set() and ready[0].opcua_port > 0


async def test_cancelling_run_simulator_closes_both_ports() -> None:
    ready: list[Simulator] = []
    started = asyncio.Event()

    def on_ready(sim: Simulator) -> None:
        ready.append(sim)
        started.set()

    task = asyncio.create_task(run_simulator(speed=600.0, batches=None, opcua_port=0, modbus_port=0,
                                             on_ready=on_ready))
    await asyncio.wait_for(started.wait(), 60)  # an OPC UA server's start: seconds on a loaded machine
    ports = (ready[0].opcua_port, ready[0].modbus_port)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for port in ports:
        with pytest.raises(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
