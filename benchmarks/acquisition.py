"""Acquisition cost: 2,000 Modbus float32 tags and 2,000 OPC UA nodes on loopback, against raw baselines.

Each server runs in its own process, as a PLC is its own device, so this process's CPU time is
the agent's. Cycles of the driver and of the baseline alternate, so both see the same machine:

* Modbus: ``ModbusDriver.read()`` (33 requests of <=124 registers, decoded into samples) against
  the same 33 requests sent with a bare pymodbus client. Two runs: every value changing on every
  cycle (the worst case: nothing can be reused) and values steady (most of a plant, most of the time).
* OPC UA: ``OpcUaDriver.read()`` (one Read, every DataValue into a sample) against one
  ``client.read_values()`` of the same nodes.

Prints, per case: requests per cycle, cycle time median and p99, readings/s at back-to-back
cycles, the CPU per 1,000 readings (the driver's, and the bare client's for the same requests), and
the ratio of medians to the baseline (target: within 1.25x).

Then, without a server, the Modbus driver's own decoding of the 2,000 float32 tags' responses,
per value: every value changing (typed decimals, and random float32 mantissas that need 8 or 9
digits), and steady; against each tag decoded on its own (``make_decoder``). Target: <= 1 us per
changed float32 value.

Usage: python benchmarks/acquisition.py [--cycles N] [--only modbus,opcua,decode]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

TAGS = 2000
NS = "urn:blackbox:bench"


# --- servers (child processes) -----------------------------------------------------------------


def _float_registers(offset: float) -> list[int]:
    raw = struct.pack(f">{TAGS}f", *(20.0 + i * 0.37 + offset for i in range(TAGS)))
    return list(struct.unpack(f">{2 * TAGS}H", raw))


def serve_modbus(ports: Queue[int], changing: bool) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    images = [_float_registers(k * 0.013) for k in range(3)]
    turn = [0]

    async def action(function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: Any) -> None:
        if changing and address == 0:  # a new cycle: every value differs from the last cycle's
            turn[0] = (turn[0] + 1) % 3  # three images, so alternating readers also always see a change
            registers[:2 * TAGS] = images[turn[0]]

    async def main() -> None:
        unused = [SimData(address=60000, values=[0], datatype=DataType.REGISTERS)]
        bits = [SimData(address=60000, values=[False], datatype=DataType.BITS)]
        hr = [SimData(address=0, values=images[0], datatype=DataType.REGISTERS)]
        device = SimDevice(id=1, simdata=(bits, bits, hr, unused), action=action)
        server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)  # what pymodbus types as a BaseTransport is the listening server
        ports.put(listener.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_opcua(ports: Queue[int]) -> None:
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def main() -> None:
        server = Server()
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0/")
        idx = await server.register_namespace(NS)
        for i in range(TAGS):
            await server.nodes.objects.add_variable(ua.NodeId(ua.String(f"v{i:04d}"), ua.Int16(idx)), f"v{i:04d}",
                                                    ua.Variant(20.0 + i * 0.37, ua.VariantType.Double))
        await server.start()
        assert server.bserver is not None  # started
        ports.put(server.bserver.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def start(target: Callable[..., None], *args: Any) -> tuple[BaseProcess, int]:
    ctx = multiprocessing.get_context("spawn")
    ports: Queue[int] = ctx.Queue()
    proc = ctx.Process(target=target, args=(ports, *args), daemon=True)
    proc.start()
    return proc, ports.get(timeout=60)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    requests: int
    times: list[float]
    cpu_s: float
    readings: int

    def line(self, baseline: Figures | None = None) -> str:
        median = statistics.median(self.times)
        p99 = statistics.quantiles(self.times, n=100)[98]
        text = (f"  {self.name:<34} {self.requests:>4} req/cycle  median {median * 1e3:7.2f} ms  "
                f"p99 {p99 * 1e3:7.2f} ms  {TAGS / median:>9,.0f} readings/s")
        if self.readings:
            text += f"  CPU {self.cpu_s / self.readings * 1e6:6.2f} ms/1,000 readings"
        if baseline is not None:
            text += f"  = {median / statistics.median(baseline.times):.2f}x baseline"
        return text


async def alternate(cycles: int, driver_cycle: Callable[[], Awaitable[Any]],
                    raw_cycle: Callable[[], Awaitable[Any]]) -> tuple[list[float], float, list[float], float]:
    """Run driver and baseline cycles in turn; the driver's times and CPU, the baseline's times and CPU."""
    for _ in range(5):  # warm up both paths (imports, first decodes)
        await driver_cycle()
        await raw_cycle()
    driver_times, raw_times, cpu, raw_cpu = [], [], 0.0, 0.0
    for _ in range(cycles):
        c0, t0 = time.process_time(), time.perf_counter()
        await driver_cycle()
        t1, c1 = time.perf_counter(), time.process_time()
        await raw_cycle()
        t2, c2 = time.perf_counter(), time.process_time()
        driver_times.append(t1 - t0)
        raw_times.append(t2 - t1)
        cpu += c1 - c0
        raw_cpu += c2 - c1
    return driver_times, cpu, raw_times, raw_cpu


async def bench_modbus(port: int, cycles: int, label: str) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.modbus import ModbusDriver, ModbusSourceConfig

    config = ModbusSourceConfig.model_validate({
        "name": "bench", "protocol": "modbus", "host": "127.0.0.1", "port": port, "timeout": 2.0,
        "tags": [{"name": f"f{i:04d}", "address": f"hr:{2 * i}", "type": "float32", "category": "process",
                  "unit": "B"} for i in range(TAGS)]})
    driver = ModbusDriver(config)
    await driver.connect()
    raw = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0)
    await raw.connect()
    plan = [(r.start, r.count) for r in driver.plan]

    async def raw_cycle() -> None:
        for start_, count in plan:
            await raw.read_holding_registers(start_, count=count, device_id=1)

    times, cpu, raw_times, raw_cpu = await alternate(cycles, driver.read, raw_cycle)
    sample = (await driver.read())[0].value
    await driver.close()
    raw.close()
    base = Figures("raw pymodbus, same requests", len(plan), raw_times, raw_cpu, cycles * TAGS)
    print(f"Modbus, {TAGS} float32 holding-register tags, values {label} (e.g. {sample!r})")
    print(base.line())
    print(Figures("blackbox ModbusDriver.read()", len(plan), times, cpu, cycles * TAGS).line(base))


async def bench_opcua(port: int, cycles: int) -> None:
    from asyncua import Client

    from drivers.opcua import OpcUaDriver, OpcUaSourceConfig

    endpoint = f"opc.tcp://127.0.0.1:{port}"
    config = OpcUaSourceConfig.model_validate({
        "name": "bench", "protocol": "opcua", "endpoint": endpoint, "namespace_uri": NS, "timeout": 5.0,
        "tags": [{"name": f"v{i:04d}", "address": f"s=v{i:04d}", "type": "Double", "category": "process",
                  "unit": "B"} for i in range(TAGS)]})
    driver = OpcUaDriver(config)
    await driver.connect()
    client = Client(endpoint, timeout=5.0)
    await client.connect()
    idx = await client.get_namespace_index(NS)
    nodes = [client.get_node(f"ns={idx};s=v{i:04d}") for i in range(TAGS)]

    async def raw_cycle() -> None:
        await client.read_values(nodes)

    times, cpu, raw_times, raw_cpu = await alternate(cycles, driver.read, raw_cycle)
    requests = driver.health.requests_per_cycle
    await driver.close()
    await client.disconnect()
    base = Figures("raw asyncua read_values()", 1, raw_times, raw_cpu, cycles * TAGS)
    print(f"OPC UA, {TAGS} Double nodes, poll mode")
    print(base.line())
    print(Figures("blackbox OpcUaDriver.read()", requests, times, cpu, cycles * TAGS).line(base))


def bench_decode(cycles: int) -> None:
    """The driver's decoding alone: its blocks fed the responses of the 2,000 float32 tags."""
    import random

    from drivers.modbus import ModbusSourceConfig, make_decoder
    from drivers.modbus.blocks import Block, Columns
    from drivers.modbus.planner import plan_for_source

    config = ModbusSourceConfig.model_validate({
        "name": "bench", "protocol": "modbus", "host": "127.0.0.1",
        "tags": [{"name": f"f{i:04d}", "address": f"hr:{2 * i}", "type": "float32", "category": "process",
                  "unit": "B"} for i in range(TAGS)]})
    index = {t.name: i for i, t in enumerate(config.tags)}
    plan = plan_for_source(config)
    rng = random.Random(1)
    wild = [list(struct.unpack(f">{2 * TAGS}H", struct.pack(f">{TAGS}I", *(
        rng.getrandbits(1) << 31 | rng.randrange(120, 140) << 23 | rng.getrandbits(23) for _ in range(TAGS)))))
        for _ in range(3)]
    cases = {"typed decimals, all changing": [_float_registers(k * 0.013) for k in range(3)],
             "random float32 mantissas, all changing": wild,
             "steady": [_float_registers(0.0)]}

    def responses(registers: list[int]) -> list[list[int]]:
        return [registers[r.start:r.end] for r in plan]

    def per_value(images: list[list[list[int]]]) -> float:
        decoders = [[(make_decoder("float32"), s.offset) for s in r.tags] for r in plan]
        best = float("inf")
        for k in range(cycles):
            image = images[k % len(images)]
            t0 = time.perf_counter()
            for block, response in zip(decoders, image, strict=True):
                for decoder, offset in block:
                    decoder(response, offset)
            best = min(best, time.perf_counter() - t0)
        return best

    def blocks(images: list[list[list[int]]]) -> float:
        decoders = [Block(r, index) for r in plan]
        best = float("inf")
        for k in range(cycles + len(images)):
            image = images[k % len(images)]
            out = Columns.good(TAGS)
            t0 = time.perf_counter()
            for block, response in zip(decoders, image, strict=True):
                block.decode(response, out)
            if k >= len(images):  # the first pass decodes even a steady image
                best = min(best, time.perf_counter() - t0)
        return best

    print(f"Modbus decoding alone, {TAGS} float32 tags in {len(plan)} responses, best of {cycles} cycles")
    for label, registers in cases.items():
        images = [responses(r) for r in registers]
        print(f"  {label:<40} blocks {blocks(images) / TAGS * 1e9:6.0f} ns/value   "
              f"each tag on its own {per_value(images) / TAGS * 1e9:6.0f} ns/value")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--cycles", type=int, default=200, help="measured cycles per case (default 200)")
    ap.add_argument("--only", default="modbus,opcua,decode", help="cases to run (default: all)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if "modbus" in only:
        for changing, label in ((True, "all changing every cycle"), (False, "steady")):
            proc, port = start(serve_modbus, changing)
            try:
                asyncio.run(bench_modbus(port, args.cycles, label))
            finally:
                proc.terminate()
                proc.join()
    if "opcua" in only:
        proc, port = start(serve_opcua)
        try:
            asyncio.run(bench_opcua(port, max(20, args.cycles // 4)))
        finally:
            proc.terminate()
            proc.join()
    if "decode" in only:
        bench_decode(args.cycles)


if __name__ == "__main__":
    main()
