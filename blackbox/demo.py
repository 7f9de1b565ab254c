"""``blackbox demo``: simulator, broker, agent and store in one process, one batch, one trace report.

Everything is real: the agent polls the simulator over OPC UA and Modbus TCP, the batches travel
signed over MQTT through a real broker, the store verifies and commits them to SQLite and the
report is read back from the store. Only the clock of the simulated line is accelerated.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from blackbox.agent.runtime import Agent
from blackbox.broker import EmbeddedBroker, free_port
from blackbox.buffer import Committed
from blackbox.config import StoreConfig, load_config
from blackbox.demo_record import RECORD_CONFIG, RecordWatch, after_batch, before_batch, register_lots
from blackbox.seal import generate_key_file, load_private_key, public_key_pem
from blackbox.sim.runner import Simulator
from blackbox.spec.demo import approve_demo_config
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.joint import enroll_approver
from blackbox.store.service import run_store
from blackbox.store.trace import TraceReport, trace_batch
from blackbox.tlog.note import Verifier

log = logging.getLogger(__name__)

IDLE_BEFORE_BATCH_WALL_S = 12.0
"""The line's idle time once the accounts and cleaning records are in (the simulator's clock is held until
then, however long their signatures take on a busy machine): the agent polls and the lots are received
before the batch starts."""
DEMO_CONFIG = Path(str(files("blackbox") / "examples" / "demo.yaml"))
"""config/demo.yaml of the source tree; blackbox/examples links to config/ and is installed with the package."""


class _Store:
    """The store, served by :func:`run_store` (what ``blackbox store serve`` runs) in a thread."""

    def __init__(self, config: StoreConfig) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, args=(config,), name="demo-store", daemon=True)

    def _serve(self, config: StoreConfig) -> None:
        try:
            run_store(config, self._stop, ready=self._ready)
        except BaseException as exc:  # handed to the demo by start() or stop()
            self._error = exc
        finally:
            self._ready.set()  # a store that failed wakes start() too

    async def start(self, timeout: float) -> None:
        """Start serving; return once the broker granted the store its subscription."""
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, timeout):
            raise TimeoutError(f"the store did not subscribe to the broker within {timeout:.0f} s")
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        if self._error is not None:
            raise self._error


@dataclass
class DemoResult:
    workdir: Path
    batch: str
    report: TraceReport


class BatchWatch:
    """Follows the agent's record: which production batch started, and when it ended."""

    def __init__(self) -> None:
        self.batch = ""
        self.ended = asyncio.Event()

    def on_commit(self, committed: Committed) -> None:
        for ev in committed.events:
            if ev.type == "batch.started":
                self.batch = ev.subject or ""
            elif ev.type == "batch.ended" and ev.subject == self.batch:
                self.ended.set()


def write_config(template: Path, workdir: Path, *, opcua_port: int, modbus_port: int, mqtt: dict[str, Any],
                 database_url: str, store_mqtt: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``template`` with this run's ports, broker, paths and store; return the new file's path.

    ``mqtt`` overrides fields of ``uplink.mqtt`` (and of ``store.mqtt`` unless ``store_mqtt`` is given).
    The store's key is ``workdir/store.key`` (created if missing) and the gateway pins it.
    """
    data: dict[str, Any] = yaml.safe_load(template.read_text(encoding="utf-8"))
    data.update(extra or {})
    for src in data["sources"]:
        if src["protocol"] == "opcua":
            src["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}"
        elif src["protocol"] == "modbus":
            src["host"], src["port"] = "127.0.0.1", modbus_port
    data["gateway"]["key_file"] = str(workdir / "gateway.key")
    data["buffer"] = {**data.get("buffer", {}), "path": str(workdir / "buffer.sqlite")}
    data["agent"] = {**data.get("agent", {}), "control_socket": str(workdir / "agent.sock")}
    uplink = data.setdefault("uplink", {})
    uplink["mqtt"] = {**uplink.get("mqtt", {}), **mqtt}
    store = data.setdefault("store", {})
    store["database_url"] = database_url
    # the store's key, pinned by the gateway: every acknowledgement is a receipt signed with it
    store["key_file"] = str(workdir / "store.key")
    store_key = workdir / "store.key"
    private = load_private_key(store_key) if store_key.exists() else generate_key_file(store_key)
    uplink["store_key"] = Verifier(store.get("log_origin", StoreConfig().log_origin), private.public_key()).vkey
    store["mqtt"] = {**store.get("mqtt", {}), **(store_mqtt if store_mqtt is not None else mqtt)}
    path = workdir / "blackbox.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


async def run_demo(workdir: Path | None = None, *, template: Path = DEMO_CONFIG, seed: int = 1,
                   speed: float = 600.0, timeout: float = 110.0) -> DemoResult:
    """Run one simulated production batch end to end and return its trace report."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="blackbox-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker()
    await broker.start()
    # the line idles a while before the batch, so that the agent is polling when it starts
    sim = Simulator(seed=seed, speed=speed, batches=1, opcua_port=free_port(), modbus_port=free_port(),
                    durations={"idle": IDLE_BEFORE_BATCH_WALL_S * speed})
    store: _Store | None = None
    agent: Agent | None = None
    try:
        await sim.start(clock=False)  # the line idles until the operators' entries before the batch are in
        mqtt = {"host": broker.host, "port": broker.port, "protocol": broker.protocol}
        path = write_config(template, workdir, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port,
                            mqtt=mqtt, database_url=f"sqlite:///{workdir / 'store.sqlite'}",
                            extra={"record": RECORD_CONFIG})
        approvers = approve_demo_config(path, workdir)  # the line runs under an approved specification
        loaded = load_config(path)
        cfg = loaded.config
        key = generate_key_file(cfg.gateway.key_file)
        engine = open_store(cfg.store.database_url)
        Ingestor(engine).enroll(cfg.gateway.id, cfg.site.id, public_key_pem(key.public_key()))
        for role, pem in approvers.public_keys.items():
            enroll_approver(engine, cfg.site.id, role, pem)
        store = _Store(cfg.store)
        await store.start(timeout=30)
        agent = Agent(loaded, key)
        watch = BatchWatch()
        agent.recorder.subscribe(watch.on_commit)
        entries = RecordWatch()
        agent.recorder.subscribe(entries.on_commit)
        await agent.start()
        await before_batch(cfg.agent.control_socket)
        sim.start_clock()
        lots = asyncio.create_task(register_lots(cfg.agent.control_socket, sim.model.supplier_lots()))
        async with asyncio.timeout(timeout):
            await sim.wait()
        async with asyncio.timeout(30):
            await watch.ended.wait()  # the agent has seen the line go idle
        await lots
        await after_batch(cfg.agent.control_socket, watch.batch, entries)
        async with asyncio.timeout(30):
            await agent.drain()
        return DemoResult(workdir, watch.batch, trace_batch(engine, watch.batch))
    finally:
        if agent is not None:
            await agent.shutdown()
        if store is not None:
            await store.stop()
        await sim.stop()
        await broker.stop()
