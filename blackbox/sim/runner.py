"""Runs the process model against the wall clock and serves it over OPC UA and Modbus TCP.

``speed`` maps wall time to simulated time (600 = ten simulated minutes per second). Every
``tick`` wall seconds the model catches up with the simulated time due, in whole 1 s steps, and
the servers publish the latest snapshot; so values are identical for a seed whatever the speed,
only the moments at which a client happens to sample them differ. ``speed=0`` runs nothing by
itself: :meth:`Simulator.advance` steps it by hand (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from blackbox.sim.faults import Fault, FaultRegistry
from blackbox.sim.modbus_server import ModbusServer
from blackbox.sim.opcua_server import OpcUaServer
from blackbox.sim.process import ProcessModel, Snapshot
from blackbox.sim.recipe import IDLE
from blackbox.sim.tags import NAMESPACE_URI

log = logging.getLogger(__name__)

ServerName = Literal["opcua", "modbus"]

STEP_BUDGET_S = 0.02
"""Wall time spent stepping the model between two turns of the event loop. A model that falls behind
its speed (a huge speed, a loaded machine) catches up in bursts of this length, the servers answering
in between, instead of starving them: it used to take up to 20,000 steps at once (2.5 s of CPU at
125 µs a step, far more on a loaded machine), during which no client was answered."""


class Simulator:
    """The simulated cream line: process model, OPC UA server and Modbus TCP server.

    Port 0 lets the OS pick a free port; :attr:`opcua_port` and :attr:`modbus_port` give the ports
    bound once started. ``faults`` are switched on from the start (or from their ``phase``); more
    can be added to :attr:`faults` while running.
    """

    def __init__(self, *, seed: int = 1, speed: float = 1.0, batches: int | None = 1,
                 durations: Mapping[str, float] | None = None, opcua_port: int = 4840, modbus_port: int = 5020,
                 host: str = "127.0.0.1", modbus_unit_id: int = 1, tick: float = 0.05,
                 faults: Iterable[Fault] = ()) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0: step by hand with advance())")
        if tick <= 0:
            raise ValueError("tick must be positive")
        self.model = ProcessModel(seed=seed, durations=durations, batches=batches)
        for fault in faults:
            self.model.faults.add(fault)
        self.speed = speed
        self.tick = tick
        self.host = host
        self.batches_done = asyncio.Event()
        """Set once the requested batches have finished (``fill`` done, line idle); never if ``batches=None``."""
        self._opcua = OpcUaServer(host, opcua_port)
        self._modbus = ModbusServer(host, modbus_port, unit_id=modbus_unit_id, faults=self.model.faults)
        self._task: asyncio.Task[None] | None = None
        self._started = False

    # --- state ------------------------------------------------------------------------------

    @property
    def opcua_port(self) -> int:
        return self._opcua.port

    @property
    def modbus_port(self) -> int:
        return self._modbus.port

    @property
    def opcua_endpoint(self) -> str:
        return self._opcua.endpoint

    @property
    def namespace_uri(self) -> str:
        return NAMESPACE_URI

    @property
    def modbus_unit_id(self) -> int:
        return self._modbus.unit_id

    @property
    def current_batch(self) -> str | None:
        """The batch in production, ``None`` while idle."""
        return self.model.batch_id or None

    @property
    def phase(self) -> str:
        return self.model.phase

    @property
    def snapshot(self) -> Snapshot:
        """The values being served."""
        return self.model.snapshot

    @property
    def faults(self) -> FaultRegistry:
        """Add or remove faults here while running (see :mod:`blackbox.sim.faults`)."""
        return self.model.faults

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, *, clock: bool = True) -> None:
        """Serve OPC UA and Modbus and, with ``clock`` (and a positive speed), run the line.

        ``clock=False`` serves the idle line as it is until :meth:`start_clock`: the demo enters
        what people do before a batch (accounts, cleaning) however long that takes on a busy machine.
        """
        if self._started:
            raise RuntimeError("simulator already started")
        await self._modbus.start(self.model.snapshot)
        try:
            await self._opcua.start(self.model.snapshot)
        except BaseException:
            await self._modbus.stop()
            raise
        self._started = True
        self._check_done()
        if clock:
            self.start_clock()
        log.info("simulated line serving OPC UA at %s and Modbus TCP at %s:%d (unit %d), speed %gx",
                 self.opcua_endpoint, self.host, self.modbus_port, self.modbus_unit_id, self.speed)

    def start_clock(self) -> None:
        """Let simulated time run at ``speed`` (from where it stands); nothing if it runs or ``speed`` is 0."""
        if self._started and self._task is None and self.speed > 0:
            self._task = asyncio.create_task(self._run(), name="blackbox-simulator")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._started:
            self._started = False
            try:
                await self._opcua.stop()
            finally:
                await self._modbus.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def restart_server(self, which: ServerName, downtime: float = 0.0, *, extra_namespaces: int = 0) -> None:
        """Restart one server as a PLC reboot does: every connection (and OPC UA session and
        subscription) is lost; after ``downtime`` wall seconds it serves again on the same port.

        ``extra_namespaces`` registers that many namespaces before the cream line's on the new
        OPC UA server, so its namespace index changes (clients must resolve the URI again).
        Returns once the server serves again; the process model keeps running meanwhile.
        """
        if not self._started:
            raise RuntimeError("the simulator is not running")
        log.warning("simulated %s server restarting (down for %.1f s)", which, downtime)
        if which == "opcua":
            await self._opcua.stop()
            await asyncio.sleep(downtime)
            await self._opcua.start(self.model.snapshot, extra_namespaces=extra_namespaces)
        elif which == "modbus":
            await self._modbus.stop()
            await asyncio.sleep(downtime)
            await self._modbus.start(self.model.snapshot)
        else:
            raise ValueError(f"unknown server {which!r} (opcua or modbus)")

    async def disconnect(self, which: ServerName, duration: float) -> None:
        """Cut the network to one server for ``duration`` wall seconds: every connection is dropped
        and new ones are refused, but the server keeps its state (OPC UA sessions survive).

        Returns once the server accepts connections again.
        """
        if not self._started:
            raise RuntimeError("the simulator is not running")
        log.warning("simulated %s server unreachable for %.1f s", which, duration)
        if which == "opcua":
            await self._opcua.disconnect()
            await asyncio.sleep(duration)
            await self._opcua.listen()
        elif which == "modbus":  # a Modbus device keeps no session: dropping and relistening is all
            await self._modbus.stop()
            await asyncio.sleep(duration)
            await self._modbus.start(self.model.snapshot)
        else:
            raise ValueError(f"unknown server {which!r} (opcua or modbus)")

    async def drop_subscriptions(self) -> int:
        """The OPC UA server forgets every subscription while sessions stay up (as a PLC may after a
        program download): no error reaches the clients, their subscriptions just fall silent."""
        if not self._started:
            raise RuntimeError("the simulator is not running")
        dropped = await self._opcua.drop_subscriptions()
        log.warning("simulated OPC UA server dropped %d subscription(s)", dropped)
        return dropped

    async def wait(self) -> None:
        """Until the requested batches are done; re-raises if the simulation loop failed."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self.batches_done.wait())
        pending: set[asyncio.Future[Any]] = {waiter}
        if self._task is not None:
            pending.add(self._task)
        try:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        for fut in done:
            if fut is not waiter:
                fut.result()  # raises the loop's error
                raise RuntimeError("simulation loop ended unexpectedly")

    async def advance(self, seconds: float) -> Snapshot:
        """Step the model ``seconds`` of simulated time and publish the result (for ``speed=0``)."""
        for _ in range(max(0, round(seconds / self.model.dt))):
            self.model.step()
        await self._publish()
        return self.model.snapshot

    # --- internals --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wall0, sim0, dt = loop.time(), self.model.t, self.model.dt
        while True:
            due = sim0 + (loop.time() - wall0) * self.speed
            steps = int((due - self.model.t) / dt + 1e-9)
            behind = False
            if steps > 0:
                budget_end = loop.time() + STEP_BUDGET_S
                for _ in range(steps):
                    self.model.step()
                    if loop.time() >= budget_end:
                        behind = True  # the rest once the servers have had their turn
                        break
                await self._publish()
            await asyncio.sleep(0 if behind else self.tick)

    async def _publish(self) -> None:
        snapshot = self.model.snapshot
        self._modbus.publish(snapshot)
        await self._opcua.publish(snapshot)
        self._check_done()

    def _check_done(self) -> None:
        if self.model.finished and self.model.phase == IDLE and not self.batches_done.is_set():
            log.info("simulated line: %d batch(es) done", self.model.batches_completed)
            self.batches_done.set()


async def run_simulator(seed: int = 1, speed: float = 600.0, batches: int | None = 1, opcua_port: int = 4840,
                        modbus_port: int = 5020, host: str = "127.0.0.1", *,
                        durations: Mapping[str, float] | None = None, faults: Iterable[Fault] = (),
                        on_ready: Callable[[Simulator], None] | None = None) -> None:
    """Serve the simulated line until ``batches`` are done (``None``: until cancelled).

    ``on_ready`` is called once both servers listen (e.g. to print the endpoints).
    """
    async with Simulator(seed=seed, speed=speed, batches=batches, durations=durations, opcua_port=opcua_port,
                         modbus_port=modbus_port, host=host, faults=faults) as sim:
        if on_ready is not None:
            on_ready(sim)
        await sim.wait()
