"""The agent: wires drivers, recorder, sealer and uplink together and runs them until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.agent.context import ContextTracker
from blackbox.agent.control import Caller, ControlServer
from blackbox.agent.poller import SourcePoller
from blackbox.agent.recorder import Recorder
from blackbox.agent.sealer import Sealer
from blackbox.buffer import Buffer, Committed
from blackbox.config import LoadedConfig
from blackbox.model import EventDraft
from blackbox.rules import RuleEngine
from blackbox.seal import load_private_key
from blackbox.topics import GatewayTopics
from blackbox.uplink import Forwarder, UplinkSession
from drivers import registry

log = logging.getLogger(__name__)
T = TypeVar("T")
RULES_TICK_S = 1.0
"""How often time-driven rules run when no reading arrives."""


def config_applied_event(loaded: LoadedConfig) -> EventDraft:
    """The configuration in force, in the record: the store judges readings by these limits."""
    cfg = loaded.config
    tags = [t.model_dump(mode="json", include={"name", "unit", "category", "eng_unit", "description", "limits"})
            for t in cfg.tags()]
    return EventDraft("config.applied", cfg.gateway.id, {
        "sha256": loaded.sha256, "gateway": cfg.gateway.id, "site": cfg.site.model_dump(mode="json"),
        "tags": tags})


class Agent:
    """The edge agent of one gateway (``blackbox run``)."""

    def __init__(self, loaded: LoadedConfig, key: Ed25519PrivateKey | None = None) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.cfg = cfg
        self._key = key if key is not None else load_private_key(cfg.gateway.key_file)
        self.topics = GatewayTopics(cfg.uplink.mqtt.topic_root, cfg.site.id, cfg.gateway.id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blackbox-buffer")
        self.buffer = Buffer(cfg.buffer.path, cfg.buffer.synchronous)
        saved = self.buffer.load_state()
        self.recorder = Recorder(self.buffer, self.db,
                                 ContextTracker(cfg.context, cfg.tag_index(), saved.get("context")),
                                 RuleEngine(cfg.rules, cfg.tag_index(), saved.get("rules")))
        self.pollers = [SourcePoller(registry.create(src), self.recorder,
                                     stagger=src.poll_interval * i / max(len(cfg.sources), 1))
                        for i, src in enumerate(cfg.sources)]
        self.forwarder = Forwarder(self.buffer, self.db, self.topics.batches, cfg.uplink.ack_timeout,
                                   cfg.uplink.max_in_flight)
        self.sealer = Sealer(self.buffer, self.db, self._key, cfg.seal, cfg.site.id, cfg.gateway.id,
                             loaded.sha256, on_sealed=self.forwarder.notify)
        self.recorder.subscribe(self._after_commit)
        self.control = ControlServer(cfg.agent.control_socket)
        self.control.register("status", self._status)
        for cmd, handler in self.recorder.rules.control_handlers().items():
            self.control.register(cmd, handler)
        self.session: UplinkSession | None = None
        self._poll_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a buffer call on the buffer's own thread (SQLite work never blocks the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        mqtt_cfg = self.cfg.uplink.mqtt
        client_id = mqtt_cfg.client_id or f"blackbox-agent-{self.cfg.gateway.id}"
        self.session = UplinkSession(mqtt_cfg, self.topics, client_id, loop, on_ack=self.forwarder.on_ack,
                                     on_connected=self.forwarder.reconnected)
        self.forwarder.session = self.session
        await self.recorder.record([], [config_applied_event(self.loaded)])
        await self.forwarder.refresh_delivered()
        self.session.start()
        await self.control.start()
        self._tasks = [loop.create_task(self.sealer.run(), name="sealer"),
                       loop.create_task(self.forwarder.run(), name="forwarder"),
                       loop.create_task(self._tick_rules(), name="rules-tick")]
        self._poll_tasks = [loop.create_task(p.run(), name=f"poll:{p.cfg.name}") for p in self.pollers]
        self.started.set()
        log.info("agent %s started: %d sources, %d tags, buffer %s", self.cfg.gateway.id, len(self.pollers),
                 sum(len(s.tags) for s in self.cfg.sources), self.cfg.buffer.path)

    async def stop_polling(self) -> None:
        """Stop every source; the cycle in progress is dropped before commit or already committed."""
        for t in self._poll_tasks:
            t.cancel()
        await asyncio.gather(*self._poll_tasks, return_exceptions=True)
        self._poll_tasks = []

    async def drain(self) -> int:
        """Stop polling, seal everything, and wait until the store has acknowledged all of it.

        Returns the last sequence number delivered.
        """
        await self.stop_polling()
        await self.sealer.flush()
        last = self.buffer.last_seq
        await self.forwarder.wait_delivered(last)
        return last

    async def shutdown(self) -> None:
        """Stop polling, seal what is buffered, give the uplink a grace period to deliver, close.

        Whatever is not acknowledged within the grace period stays in the buffer and is sent after
        the next start.
        """
        await self.stop_polling()
        await self.sealer.flush()
        try:
            await asyncio.wait_for(self.forwarder.wait_delivered(self.buffer.last_seq),
                                   timeout=self.cfg.uplink.shutdown_grace)
        except TimeoutError:
            log.warning("stopping with undelivered batches; they are kept and sent after the next start")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.control.stop()
        if self.session is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.session.stop)
        await self.db(self.buffer.close)
        self._executor.shutdown(wait=True)
        log.info("agent %s stopped", self.cfg.gateway.id)

    async def _tick_rules(self) -> None:
        while True:
            await asyncio.sleep(RULES_TICK_S)
            await self.recorder.tick()

    async def _status(self, _args: dict[str, Any], _caller: Caller) -> dict[str, Any]:
        pending, last_seq = await self.db(self.buffer.pending_counts)
        ctx = self.recorder.tracker.context
        return {
            "gateway": self.cfg.gateway.id, "site": self.cfg.site.id, "config_sha256": self.loaded.sha256,
            "context": {"batch": ctx.batch, "product": ctx.product, "phase": ctx.phase},
            "sources": [{"name": p.cfg.name, "protocol": p.cfg.protocol, "connected": p.connected,
                         "cycles": p.cycles, "last_cycle_s": p.last_cycle_s,
                         "last_error": p.driver.health.last_error} for p in self.pollers],
            "buffer": {"last_seq": last_seq, "undelivered_batches": pending},
            "uplink": {"connected": bool(self.session and self.session.connected),
                       "last_error": self.session.last_error if self.session else None,
                       "delivered_through_seq": self.forwarder.last_delivered_seq},
            "alarms": [{"tag": tag, "level": level} for tag, level in self.recorder.rules.active_alarms()],
        }

    def _after_commit(self, committed: Committed) -> None:
        self.sealer.notify()
        if self.session is None or not self.session.connected:
            return  # live alarms are a convenience; the record is the sealed batches
        for ev in committed.events:
            if ev.type.startswith("alarm."):
                self.session.publish(self.topics.alarms, orjson.dumps({
                    "seq": ev.seq, "type": ev.type, "subject": ev.subject, "data": ev.data, "ts_us": ev.ts_us,
                    "batch": ev.batch, "phase": ev.phase}))
