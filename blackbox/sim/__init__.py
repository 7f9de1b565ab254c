"""The simulated cream line: a process model served over OPC UA and Modbus TCP, with faults.

``Simulator`` runs it (``async with Simulator(speed=600, opcua_port=0, modbus_port=0) as sim``),
``run_simulator`` is what ``blackbox simulate`` calls, and ``ProcessModel`` is the model alone.
See docs/simulator.md for the tags, the register map and the faults.
"""

from blackbox.sim.faults import (
    FAULT_NAMES,
    BadQuality,
    DoorOpen,
    Drift,
    Fault,
    FaultRegistry,
    FillWeightDrift,
    Frozen,
    HeatingOvershoot,
    IllegalAddress,
    LotNotOnRecipe,
    Spike,
    Stuck,
    WeighingOutOfTolerance,
    conductivity_creep,
    homogenizer_sag,
    make_fault,
    vacuum_leak,
)
from blackbox.sim.process import ProcessModel, Snapshot
from blackbox.sim.recipe import DEFAULT_DURATIONS, IDLE, PHASES
from blackbox.sim.runner import Simulator, run_simulator
from blackbox.sim.tags import NAMESPACE_URI, TAGS, SimTag

__all__ = [
    "DEFAULT_DURATIONS",
    "FAULT_NAMES",
    "IDLE",
    "NAMESPACE_URI",
    "PHASES",
    "TAGS",
    "BadQuality",
    "DoorOpen",
    "Drift",
    "Fault",
    "FaultRegistry",
    "FillWeightDrift",
    "Frozen",
    "HeatingOvershoot",
    "IllegalAddress",
    "LotNotOnRecipe",
    "ProcessModel",
    "SimTag",
    "Simulator",
    "Snapshot",
    "Spike",
    "Stuck",
    "WeighingOutOfTolerance",
    "conductivity_creep",
    "homogenizer_sag",
    "make_fault",
    "run_simulator",
    "vacuum_leak",
]
