"""The poller's timing as it happens on this machine (the tests check the logic, never the clock).

Two figures, both on loopback in one process:

* **Poll rhythm**: a Modbus source polled every ``--interval`` seconds while a second source, a
  device that accepts connections and never answers, times out (0.5 s) and is reconnected over
  and over. Prints the median, p99 and largest gap between the live source's cycles, and the
  cycles it skipped (overruns): the hung source should not show in the live one's rhythm.
* **Reconnect back-off**: a device that accepts and hangs up at once; prints the gaps between
  connection attempts against the nominal delays (0.1, 0.2, 0.4, 0.4, 0.4 s, each x 0.8-1.2).

Usage: python benchmarks/poller_rhythm.py [--seconds 10] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from blackbox.agent.poller import SourcePoller
from blackbox.logs import setup_logging
from blackbox.model import EventDraft, Sample
from drivers.modbus import ModbusDriver, ModbusSourceConfig

TAG = {"name": "a", "address": "hr:0", "type": "int16", "category": "process", "unit": "U"}


class Times:
    """A poller's sink that keeps the monotonic time of each cycle with readings."""

    def __init__(self) -> None:
        self.at: list[float] = []

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> None:
        if samples:
            self.at.append(time.monotonic())


def source(name: str, port: int, **settings: Any) -> ModbusDriver:
    return ModbusDriver(ModbusSourceConfig.model_validate({
        "name": name, "protocol": "modbus", "host": "127.0.0.1", "port": port, "tags": [TAG], **settings}))


async def rhythm(seconds: float, interval: float) -> None:
    device = SimDevice(id=1, simdata=([SimData(address=60000, values=[False], datatype=DataType.BITS)],
                                      [SimData(address=60000, values=[False], datatype=DataType.BITS)],
                                      [SimData(address=0, values=[7], datatype=DataType.REGISTERS)],
                                      [SimData(address=60000, values=[0], datatype=DataType.REGISTERS)]))
    server = ModbusTcpServer([device], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    listener = server.transport
    assert isinstance(listener, asyncio.Server)  # what pymodbus types as a BaseTransport is the listening server
    port = listener.sockets[0].getsockname()[1]

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    sink = Times()
    live = SourcePoller(source("live", port, poll_interval=interval), sink)
    hung = SourcePoller(source("hung", hole.sockets[0].getsockname()[1], timeout=0.5, reconnect_min=0.1,
                               reconnect_max=0.2), Times())
    tasks = [asyncio.create_task(p.run()) for p in (live, hung)]
    await asyncio.sleep(seconds)
    for p in (live, hung):
        p.request_stop()
    await asyncio.gather(*tasks)
    hole.close()
    await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
    gaps = sorted(b - a for a, b in itertools.pairwise(sink.at))
    print(f"poll rhythm at {interval * 1e3:.0f} ms beside a hung source ({len(sink.at)} cycles in {seconds:g} s): "
          f"median {statistics.median(gaps) * 1e3:.1f} ms, p99 {gaps[int(0.99 * (len(gaps) - 1))] * 1e3:.1f} ms, "
          f"max {gaps[-1] * 1e3:.1f} ms, skipped cycles {live.overruns}")


async def back_off() -> None:
    accepted: list[float] = []

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    poller = SourcePoller(source("flaky", server.sockets[0].getsockname()[1], timeout=0.5, reconnect_min=0.1,
                                 reconnect_max=0.4), Times())
    task = asyncio.create_task(poller.run())
    async with asyncio.timeout(30):
        while len(accepted) < 6:
            await asyncio.sleep(0.01)
    poller.request_stop()
    await task
    server.close()
    gaps = [b - a for a, b in itertools.pairwise(accepted[:6])]
    print("reconnect back-off: " + ", ".join(f"{g * 1e3:.0f} ms (nominal {d * 1e3:.0f} x 0.8-1.2)"
                                             for g, d in zip(gaps, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    setup_logging("ERROR")  # the hung source's reconnects would log a warning each
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # and pymodbus an error with a dump of the link
    asyncio.run(rhythm(args.seconds, args.interval))
    asyncio.run(back_off())


if __name__ == "__main__":
    main()
