"""The agent: wires drivers, recorder, sealer and uplink together and runs them until stopped.

Signals (installed by ``blackbox run``): SIGTERM/SIGINT stop it gracefully (:meth:`Agent.shutdown`),
SIGHUP reloads the configuration file (:meth:`Agent.reload`). Under systemd it reports READY,
STATUS, RELOADING and STOPPING, and pings the watchdog while the event loop and the buffer's
thread both answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox import systemd
from blackbox.agent.accounts_watch import accounts_events
from blackbox.agent.alarm_commands import handlers as alarm_handlers
from blackbox.agent.batch_record import BatchRecord
from blackbox.agent.clock import GatewayClock
from blackbox.agent.context import ContextTracker
from blackbox.agent.control import Caller, ControlError, ControlServer, TextAnswer
from blackbox.agent.esign import Accounts
from blackbox.agent.live import LiveView
from blackbox.agent.metrics import SCRAPE_TIMEOUT_S
from blackbox.agent.operator import operator_handlers
from blackbox.agent.poller import SourcePoller
from blackbox.agent.recorder import Recorder
from blackbox.agent.sealer import Sealer
from blackbox.agent.status import collect_metrics, health, status_answer, tail_handler
from blackbox.agent.system_alarms import SystemAlarms
from blackbox.buffer import Buffer, BufferError, Committed
from blackbox.config import Config, ConfigError, LoadedConfig, load_config
from blackbox.gc_settle import settle
from blackbox.model import EventDraft, now_us
from blackbox.rules import RuleEngine
from blackbox.seal import load_private_key
from blackbox.spec.enforce import (
    REFUSALS,
    InForce,
    effective_config,
    material_specs,
    qc_specs,
    refusal_data,
    resolve,
    restore,
    same_pins,
)
from blackbox.spec.model import SpecError
from blackbox.topics import GatewayTopics
from blackbox.uplink import Forwarder, UplinkSession
from drivers import registry

if TYPE_CHECKING:
    from blackbox.prometheus import MetricsServer

log = logging.getLogger(__name__)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")
RULES_TICK_S = 1.0
"""How often time-driven rules (and the clock check) run when no reading arrives."""
MAINTAIN_EVERY_S = 60.0
"""Retention pruning, the disk reserve, a held buffer size released."""
RESTART_AFTER_CRASH_S = 1.0
RESTART_ONLY = ("gateway", "agent", "buffer", "uplink")
"""Configuration sections that take effect only after a restart (plus ``site.id``)."""


def config_applied_event(loaded: LoadedConfig, reason: str = "start", effective: Config | None = None,
                         in_force: InForce | None = None) -> EventDraft:
    """The configuration in force, in the record: the store judges readings by these limits.

    ``effective`` is the configuration with the limits of the specifications in force
    (:func:`blackbox.spec.enforce.effective_config`); ``specification`` says whether they were
    approved, and by whom.
    """
    cfg = effective if effective is not None else loaded.config
    tags = [t.model_dump(mode="json", include={"name", "unit", "category", "eng_unit", "description", "limits"})
            for t in cfg.tags()]
    return EventDraft("config.applied", cfg.gateway.id, {
        "sha256": loaded.sha256, "gateway": cfg.gateway.id, "site": cfg.site.model_dump(mode="json"),
        "tags": tags, "reason": reason, "specification": (in_force or InForce()).reference()})


def spec_applied_events(in_force: InForce) -> list[EventDraft]:
    """One ``spec.applied`` per specification in force: the whole signed document, in the chain."""
    return [EventDraft("spec.applied", s.spec.id, s.record()) for s in in_force.specs]


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """Sections changed in ``new`` that a reload cannot apply."""
    changed = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    return (["site.id"] if old.site.id != new.site.id else []) + changed


class Agent:
    """The edge agent of one gateway (``blackbox run``)."""

    def __init__(self, loaded: LoadedConfig, key: Ed25519PrivateKey | None = None) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.cfg = cfg
        self._key = key if key is not None else load_private_key(cfg.gateway.key_file)
        self.topics = GatewayTopics(cfg.uplink.mqtt.topic_root, cfg.site.id, cfg.gateway.id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blackbox-buffer")
        self.buffer = Buffer(cfg.buffer.path, cfg.buffer.synchronous, int(cfg.buffer.quota_mb * 2**20))
        if self.buffer.migrated:
            log.warning("buffer %s upgraded to schema revision %s", cfg.buffer.path, self.buffer.migrated[-1])
        saved = self.buffer.load_state()
        self.in_force, self._start_refusal = self._initial_spec(cfg, saved.get("spec") or {})
        self.effective = effective_config(cfg, self.in_force)
        tags = self.effective.tag_index()
        self.recorder = Recorder(self.buffer, self.db,
                                 ContextTracker(cfg.context, tags, saved.get("context"), material_specs(self.in_force)),
                                 RuleEngine(self.effective.rules, tags, saved.get("rules"), cfg.alarms),
                                 GatewayClock(cfg.agent.clock_jump_threshold,
                                              int(saved.get("clock", {}).get("issued_us", 0))),
                                 SystemAlarms(saved.get("alarms"), cfg.alarms),
                                 retention_s=cfg.buffer.retention_hours * 3600)
        self.recorder.spec_state = self.in_force.state()
        self.recorder.record_keeper = BatchRecord(cfg.record, saved.get("record"), qc_specs(self.in_force))
        self.accounts = Accounts(cfg.record.operators_file, cfg.record.lockout_after)
        self.live = LiveView(tags, poll_s=poll_intervals(cfg))
        self.pollers = self._make_pollers(cfg)
        self.forwarder = Forwarder(self.buffer, self.db, self.topics, cfg.uplink)
        self.forwarder.on_alarm = self._uplink_alarm
        self.sealer = Sealer(self.buffer, self.db, self._key, cfg.seal, cfg.site.id, cfg.gateway.id,
                             loaded.sha256, on_sealed=self.forwarder.notify, key_file=cfg.gateway.key_file)
        self.recorder.subscribe(self.live.on_commit)
        self.recorder.subscribe(self._after_commit)
        self.control = ControlServer(cfg.agent.control_socket)
        self.control.register("status", self._status)
        self.control.register("tail", tail_handler(self))
        for cmd, handler in operator_handlers(self.recorder, self.accounts).items():
            self.control.register(cmd, handler)
        for cmd, handler in self.sealer.control_handlers(self.recorder.commit).items():
            self.control.register(cmd, handler)
        for cmd in alarm_handlers(self.recorder.rules):
            self.control.register(cmd, self._rules_command(cmd))
        self.metrics: MetricsServer | None = None
        self.session: UplinkSession | None = None
        self._poll_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._alarm_tasks: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self.started = asyncio.Event()
        self.started_at_us: int | None = None

    def _metrics_server(self, loop: asyncio.AbstractEventLoop) -> MetricsServer:
        """``/metrics`` and ``/health``, served from a thread; the figures are read on the loop.

        prometheus-client is imported here, only when metrics are configured (about 2 MiB)."""
        from prometheus_client import CollectorRegistry

        from blackbox.agent.metrics_export import AgentCollector
        from blackbox.prometheus import MetricsServer

        registry = CollectorRegistry()
        registry.register(AgentCollector(loop, lambda: collect_metrics(self)))

        def healthy() -> tuple[bool, str]:
            return asyncio.run_coroutine_threadsafe(health(self), loop).result(SCRAPE_TIMEOUT_S)

        return MetricsServer(self.cfg.agent.metrics_host, self.cfg.agent.metrics_port or 0, registry, healthy)

    async def db(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
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
        if not await self.db(self.buffer.ensure_reserve):
            log.warning("no room on disk for the buffer's reserve")
        await self.recorder.record([], [*([self._start_refusal] if self._start_refusal else []),
                                        *spec_applied_events(self.in_force),
                                        config_applied_event(self.loaded, "start", self.effective, self.in_force)])
        if not self.in_force.approved:
            log.warning("UNAPPROVED: no specification approved by the factory QA and the regulator is in force; "
                        "the configured limits apply and every batch is reported as unapproved")
        self._warn_unapproved_qc()
        try:
            chained = self.recorder.record_keeper.chained_accounts()
            await self.recorder.record([], accounts_events(self.accounts, chained, "found at agent start"))
        except ControlError as exc:
            log.error("operator accounts not checked at start: %s", exc)
        await self.sealer.start()
        await self.forwarder.refresh_delivered()
        self.session.start()
        await self.control.start()
        if self.cfg.agent.metrics_port is not None:
            self.metrics = self._metrics_server(loop)
            self.metrics.start()
        self._tasks = [self._supervised("sealer", self.sealer.run),
                       self._supervised("forwarder", self.forwarder.run),
                       self._supervised("tick", self._tick),
                       self._supervised("maintain", self._maintain)]
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._tasks.append(self._supervised("watchdog", lambda: self._watchdog(interval)))
        settle()  # what is built so far lives as long as the agent: out of the cyclic GC's view
        self._start_polling()
        self.started_at_us = now_us()
        self.started.set()
        n_tags = sum(len(s.tags) for s in self.cfg.sources)
        systemd.notify(f"READY=1\nSTATUS=recording {len(self.pollers)} sources, {n_tags} tags")
        log.info("agent %s started: %d sources, %d tags, buffer %s", self.cfg.gateway.id, len(self.pollers),
                 n_tags, self.cfg.buffer.path)

    async def stop_polling(self) -> None:
        """Stop every source after its cycle in progress has been read and committed.

        A source that does not finish within its timeout (a hung read) is cancelled: that cycle was
        never committed, so nothing counted as taken is lost.
        """
        for p in self.pollers:
            p.request_stop()
        if self._poll_tasks:
            limit = max(p.cfg.timeout * (p.driver.health.requests_per_cycle + 2) for p in self.pollers)
            _, late = await asyncio.wait(self._poll_tasks, timeout=limit)
            for t in late:
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
        systemd.notify("STOPPING=1\nSTATUS=stopping: sealing and delivering what is buffered")
        await self.stop_polling()
        await self.sealer.flush()
        try:
            async with asyncio.timeout(self.cfg.uplink.shutdown_grace):
                await self.forwarder.wait_delivered(self.buffer.last_seq)
        except TimeoutError:
            log.warning("stopping with undelivered batches; they are kept and sent after the next start")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.live.close()
        await self.control.stop()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        if self.session is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.session.stop)
        await self.db(self.buffer.close)
        self._executor.shutdown(wait=True)
        log.info("agent %s stopped", self.cfg.gateway.id)

    # -- reload ------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: reload the configuration file in the background (one reload at a time)."""
        asyncio.get_running_loop().create_task(self._reload_logged(), name="reload")

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("configuration reload failed; still running with %s…", self.loaded.sha256[:16])

    async def reload(self) -> bool:
        """Apply the configuration file as it is now; ``False`` (and still running as before) if refused.

        Sources, tags, limits, context and rules, and sealing take effect; the sections in
        :data:`RESTART_ONLY` need a restart, and a file that changes them is refused as a whole,
        so that the recorded configuration hash always names the configuration in force.
        """
        async with self._reload_lock:
            path = self.loaded.path
            try:
                new = load_config(path)
            except ConfigError as exc:
                log.error("configuration reload refused, still running with %s…: %d problem(s):\n%s",
                          self.loaded.sha256[:16], len(exc.issues), exc)
                return False
            try:
                in_force, effective = self._reload_spec(new.config)
            except REFUSALS as exc:
                log.error("configuration reload refused, still running with %s… under %s: %s",
                          self.loaded.sha256[:16], self._spec_label(), exc)
                await self._record_refusal(str(exc), new.config, "reload")
                return False
            if new.sha256 == self.loaded.sha256 and in_force.identity == self.in_force.identity:
                log.info("configuration reload: %s is unchanged", path)
                return True
            if fixed := restart_only_changes(self.cfg, new.config):
                log.error("configuration reload refused: %s can only change with a restart "
                          "(systemctl restart blackbox-agent); still running with %s…", ", ".join(fixed),
                          self.loaded.sha256[:16])
                return False
            cfg = new.config
            tags = effective.tag_index()
            pollers = self._make_pollers(cfg)
            tracker = ContextTracker(cfg.context, tags, self.recorder.tracker.state(), material_specs(in_force))
            rules = RuleEngine(effective.rules, tags, self.recorder.rules.state(), cfg.alarms)
            spec_events = spec_applied_events(in_force) if in_force.identity != self.in_force.identity else []
            systemd.notify(systemd.reloading_message())
            await self.stop_polling()
            try:
                await self.sealer.flush()  # what was recorded under the old configuration is sealed under its hash
                self.sealer.reconfigure(cfg.seal, new.sha256)
                self.recorder.spec_state = in_force.state()
                applied = config_applied_event(new, "reload", effective, in_force)
                await self.recorder.reconfigure(tracker, rules, [*spec_events, applied])
                self.recorder.record_keeper.cfg = cfg.record  # QC requirements, units, cleaning validity
                self.recorder.record_keeper.approved_qc = qc_specs(in_force)
                self.accounts.lockout_after = cfg.record.lockout_after
                self.loaded, self.cfg, self.pollers = new, cfg, pollers
                self.in_force, self.effective = in_force, effective
                self.live.set_tags(tags, poll_intervals(cfg))
            finally:
                self._start_polling()  # the new sources, or the old ones again if the switch failed
                systemd.notify(f"READY=1\nSTATUS=configuration {self.loaded.sha256[:16]} in force")
            log.warning("configuration reloaded: %s… is in force (%d sources, %d tags)", new.sha256[:16],
                        len(pollers), len(tags))
            return True

    # -- specifications (joint control) ------------------------------------------------------

    def _warn_unapproved_qc(self) -> None:
        """Say which products release against QC specifications nobody but this gateway's administrator approved."""
        unapproved = sorted(set(self.cfg.record.qc) - set(self.recorder.record_keeper.approved_qc))
        if unapproved:
            log.warning("UNAPPROVED QC specifications for %s: taken from record.qc of the configuration, not from an "
                        "approved specification; releases record them as unapproved", ", ".join(unapproved))

    def _initial_spec(self, cfg: Config, saved: dict[str, Any]) -> tuple[InForce, EventDraft | None]:
        """The specifications to start under, and the refusal to record if the configured ones fail.

        A specification that does not verify (or a configuration that names none any more) leaves the
        agent on the last approved specification, saved in its state; without one, on the configured
        limits, unapproved.
        """
        previous = restore(saved)
        try:
            in_force = resolve(cfg)
            if in_force.approved or not previous.approved:
                return in_force, None
            reason = "the configuration names no specification, but an approved one was in force: keeping it"
        except REFUSALS as exc:
            reason = str(exc)
        try:
            effective_config(cfg, previous)
        except SpecError as exc:
            reason += f"; the last approved specification does not fit this configuration either ({exc})"
            previous = InForce()
        log.error("specification refused at start: %s; running under %s", reason, self._spec_label(previous))
        return previous, EventDraft("spec.refused", cfg.gateway.id,
                                    refusal_data(reason, cfg, cfg, previous, "start", self.loaded.path))

    def _reload_spec(self, cfg: Config) -> tuple[InForce, Config]:
        """The specifications a reloaded configuration puts in force; raises :data:`Refusal`."""
        in_force = resolve(cfg)
        if self.in_force.approved and not in_force.approved:
            raise SpecError("the new configuration names no specification: limits would change without the "
                            "approval of the factory QA and the regulator")
        if self.in_force.approved and in_force.approved and not same_pins(self.in_force, in_force):
            raise SpecError("the pinned QA or regulator keys changed: they take effect only after a restart")
        return in_force, effective_config(cfg, in_force)

    async def _record_refusal(self, reason: str, cfg: Config, when: str) -> None:
        data = refusal_data(reason, cfg, self.effective, self.in_force, when, self.loaded.path)
        try:
            await self.recorder.commit([], [EventDraft("spec.refused", cfg.gateway.id, data)])
        except Exception:
            log.exception("could not record the refused specification")

    def _spec_label(self, in_force: InForce | None = None) -> str:
        in_force = in_force if in_force is not None else self.in_force
        if not in_force.approved:
            return "the configured limits (UNAPPROVED)"
        return ", ".join(f"specification {s.spec.ref()} ({s.sha256[:16]}…)" for s in in_force.specs)

    # -- tasks -------------------------------------------------------------------------------

    def _make_pollers(self, cfg: Config) -> list[SourcePoller]:
        return [SourcePoller(registry.create(src), self.recorder,
                             stagger=src.poll_interval * i / max(len(cfg.sources), 1))
                for i, src in enumerate(cfg.sources)]

    def _start_polling(self) -> None:
        self._poll_tasks = [self._supervised(f"poll:{p.cfg.name}", p.run) for p in self.pollers]

    def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """A task that is restarted if it fails: one bug must not silently stop a source or the sealer."""

        async def keep_running() -> None:
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task %s failed; restarting it in %.0f s", name, RESTART_AFTER_CRASH_S)
                    await asyncio.sleep(RESTART_AFTER_CRASH_S)

        return asyncio.get_running_loop().create_task(keep_running(), name=name)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(RULES_TICK_S)
            await self.recorder.tick()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            await self.recorder.maintain()

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd's watchdog only while the loop runs and the buffer's thread answers."""
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self.db(lambda: None)
            except TimeoutError:
                log.error("the buffer's thread did not answer within %.1f s: not pinging the watchdog", interval)
                continue
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- control and listeners ---------------------------------------------------------------

    def _rules_command(self, cmd: str) -> Any:
        """Delegate to whichever rule engine is in force (a reload replaces it)."""

        def handler(args: dict[str, Any], caller: Caller) -> Any:
            current = alarm_handlers(self.recorder.rules, self.recorder.commit).get(cmd)
            if current is None:
                raise ControlError(f"{cmd} is not available with the configuration in force")
            return current(args, caller)

        return handler

    async def _status(self, args: dict[str, Any], _caller: Caller) -> dict[str, Any] | TextAnswer:
        return await status_answer(self, args)

    def _uplink_alarm(self, rule: str, reason: str) -> None:
        """The forwarder refused a receipt or found the store's log inconsistent: an alarm in the record."""
        drafts = self.recorder.alarms.uplink(rule, reason, now_us())
        if drafts:
            task = asyncio.get_running_loop().create_task(self._record_uplink_alarm(drafts))
            self._alarm_tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._alarm_tasks.discard)

    async def _record_uplink_alarm(self, drafts: list[EventDraft]) -> None:
        try:
            await self.recorder.commit(events=drafts)
        except BufferError as exc:
            log.error("could not record the alarm %s: %s", drafts[0].data.get("rule"), exc)

    def _after_commit(self, committed: Committed) -> None:
        self.sealer.notify()
        if self.session is None or not self.session.connected:
            return  # live alarms are a convenience; the record is the sealed batches
        for ev in committed.events:
            if ev.type.startswith("alarm."):
                self.session.publish(self.topics.alarms, orjson.dumps({
                    "seq": ev.seq, "type": ev.type, "subject": ev.subject, "data": ev.data, "ts_us": ev.ts_us,
                    "batch": ev.batch, "phase": ev.phase}))


def poll_intervals(cfg: Config) -> dict[str, float]:
    """Each tag's poll interval (its source's), for the staleness ``status`` shows."""
    return {t.name: src.poll_interval for src in cfg.sources for t in src.tags}
