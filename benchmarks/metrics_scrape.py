"""Cost of a Prometheus scrape of a running agent: wall time per ``GET /metrics`` and agent CPU per scrape.

Runs the simulator, and a real ``blackbox run`` process on the demo configuration with its metrics
endpoint, publishing to the MQTT broker at 127.0.0.1:1883. The agent's CPU (from /proc) is read over
a window without scrapes and over an equally long window with back-to-back scrapes; the difference
divided by the number of scrapes is what one scrape costs the agent.

    .venv/bin/python benchmarks/metrics_scrape.py [--scrapes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from blackbox.broker import free_port
from blackbox.demo import DEMO_CONFIG, write_config
from blackbox.sim import Simulator

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
        return body


async def main(scrapes: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bb-scrape-"))
    port = free_port()
    async with Simulator(seed=5, speed=1, opcua_port=0, modbus_port=0) as sim:
        config = write_config(DEMO_CONFIG, work, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port,
                              mqtt={"host": "127.0.0.1", "port": 1883, "topic_root": f"bbscrape-{os.getpid()}"},
                              database_url=f"sqlite:///{work / 'store.sqlite'}")
        data: dict[str, Any] = yaml.safe_load(config.read_text())
        data["agent"]["metrics_port"] = port
        config.write_text(yaml.safe_dump(data))
        exe = [sys.executable, "-m", "blackbox"]
        subprocess.run([*exe, "keys", "init", "-c", str(config)], check=True, capture_output=True)
        agent = subprocess.Popen([*exe, "run", "-c", str(config)], stderr=(work / "agent.log").open("w"))
        try:
            for _ in range(300):
                try:
                    await asyncio.to_thread(scrape, port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(5)  # sources connected, first batches sealed
            walls: list[float] = []
            size = 0

            def scrape_all() -> None:
                nonlocal size
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    size = len(scrape(port))
                    walls.append(time.perf_counter() - t0)

            c0, t0 = cpu_s(agent.pid), time.perf_counter()
            await asyncio.to_thread(scrape_all)
            c1, t1 = cpu_s(agent.pid), time.perf_counter()
            await asyncio.sleep(t1 - t0)  # the same time without scrapes: the agent's own work
            c2 = cpu_s(agent.pid)
            per_scrape_cpu = ((c1 - c0) - (c2 - c1)) / scrapes
            print(f"scrapes: {scrapes}, body {size} bytes")
            print(f"wall per scrape: median {statistics.median(walls) * 1e3:.2f} ms, "
                  f"p95 {sorted(walls)[int(0.95 * len(walls))] * 1e3:.2f} ms")
            print(f"agent CPU per scrape: {per_scrape_cpu * 1e3:.2f} ms "
                  f"(agent CPU {c1 - c0:.2f} s while scraping, {c2 - c1:.2f} s idle over {t1 - t0:.1f} s)")
        finally:
            agent.terminate()
            agent.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scrapes", type=int, default=300)
    asyncio.run(main(parser.parse_args().scrapes))
