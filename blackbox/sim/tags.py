"""Every tag the simulated line serves, where it is served, and how it is typed.

This table is the simulator's "PLC programme": the process model fills values by these names, the
OPC UA and Modbus servers lay them out by these addresses, and a test checks that
``config/demo.yaml`` reads each tag where the simulator serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from blackbox.model import Category

NAMESPACE_URI = "urn:blackbox:sim:cream-line"
"""OPC UA namespace of the EM-01 and QC-01 variables (string node ids ``s=<tag name>``)."""

Protocol = Literal["opcua", "modbus"]


@dataclass(frozen=True, slots=True)
class SimTag:
    """One tag of the simulated line.

    ``type`` is named as the driver names it: an OPC UA built-in type (``Double``, ``String``) or
    a Modbus type (``float32``, ``uint16``, ``uint32``, ``string``, ``bool``). ``length`` is the
    register count of a Modbus string (two ASCII characters per register).
    """

    name: str
    protocol: Protocol
    address: str
    type: str
    category: Category
    eng_unit: str = ""
    length: int | None = None
    description: str = ""

    @property
    def unit(self) -> str:
        """The equipment: the part of the name before the first dot."""
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        """Modbus table (``hr``, ``ir``, ``co``, ``di``); only for Modbus tags."""
        return self.address.split(":", 1)[0]

    @property
    def register(self) -> int:
        """Zero-based Modbus address within the table; only for Modbus tags."""
        return int(self.address.split(":", 1)[1])

    @property
    def size(self) -> int:
        """Registers (or bits) the value occupies; only for Modbus tags."""
        if self.type == "string":
            if self.length is None:
                raise RuntimeError("internal error: expected self.length is not None")
            return self.length
        return {"bool": 1, "uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}[self.type]


C = Category


def _ua(name: str, type_: str, category: Category, eng_unit: str = "", description: str = "") -> SimTag:
    return SimTag(name, "opcua", f"s={name}", type_, category, eng_unit, None, description)


def _mb(name: str, address: str, type_: str, category: Category, eng_unit: str = "",
        length: int | None = None, description: str = "") -> SimTag:
    return SimTag(name, "modbus", address, type_, category, eng_unit, length, description)


TAGS: tuple[SimTag, ...] = (
    # EM-01 vacuum homogenizing emulsifier: OPC UA
    _ua("EM-01.batch_id", "String", C.CONTEXT, description="Batch number, '' when idle"),
    _ua("EM-01.product_code", "String", C.CONTEXT),
    _ua("EM-01.recipe", "String", C.CONTEXT),
    _ua("EM-01.recipe_version", "String", C.CONTEXT),
    _ua("EM-01.phase", "String", C.CONTEXT, description="Current phase, 'idle' between batches"),
    _ua("EM-01.temperature", "Double", C.PROCESS, "degC", "Product temperature"),
    _ua("EM-01.jacket_temperature", "Double", C.PROCESS, "degC"),
    _ua("EM-01.vacuum", "Double", C.PROCESS, "MPa", "Gauge pressure; negative is vacuum"),
    _ua("EM-01.homogenizer_speed", "Double", C.PROCESS, "rpm"),
    _ua("EM-01.scraper_speed", "Double", C.PROCESS, "rpm"),
    _ua("EM-01.phase_elapsed", "Double", C.PROCESS, "s", "Time since the phase started"),
    # QC-01 QC instruments: OPC UA. The sample id changes last, once the results are in.
    _ua("QC-01.sample_id", "String", C.QUALITY, description="Id of the last sample measured"),
    _ua("QC-01.ph", "Double", C.QUALITY, "pH"),
    _ua("QC-01.viscosity", "Double", C.QUALITY, "mPa.s"),
    _ua("QC-01.sample_temperature", "Double", C.QUALITY, "degC"),
    # WS-01 dispensing booth: Modbus holding registers. hr:0-25 and hr:30 latch the LAST COMPLETED
    # weighing; weigh_count increments as it completes, and one read covering them is consistent.
    _mb("WS-01.material_code", "hr:0", "string", C.MATERIAL, length=4),
    _mb("WS-01.supplier_lot", "hr:4", "string", C.MATERIAL, length=8),
    _mb("WS-01.target", "hr:12", "float32", C.MATERIAL, "kg"),
    _mb("WS-01.actual", "hr:14", "float32", C.MATERIAL, "kg"),
    _mb("WS-01.scale_id", "hr:16", "string", C.MATERIAL, length=4),
    _mb("WS-01.operator", "hr:20", "string", C.MATERIAL, length=4),
    _mb("WS-01.weigh_count", "hr:24", "uint32", C.MATERIAL, description="Completed weighings since start"),
    _mb("WS-01.net_weight", "hr:26", "float32", C.MATERIAL, "kg", description="Live net weight"),
    _mb("WS-01.tare", "hr:28", "float32", C.MATERIAL, "kg", description="Live tare"),
    _mb("WS-01.tolerance", "hr:30", "float32", C.MATERIAL, "kg", description="+/- tolerance of the weighing"),
    _mb("WS-01.stable", "co:0", "bool", C.MATERIAL, description="Scale at rest"),
    # FL-01 filler: Modbus holding registers
    _mb("FL-01.fill_weight", "hr:40", "float32", C.QUALITY, "g", description="Net weight of the last jar"),
    _mb("FL-01.jars_filled", "hr:42", "uint32", C.PROCESS, "jars"),
    _mb("FL-01.reject_count", "hr:44", "uint16", C.QUALITY, "jars"),
    _mb("FL-01.running", "co:1", "bool", C.PROCESS),
    # WT-01 water-phase tank, OT-01 oil-phase tank: Modbus input registers
    _mb("WT-01.temperature", "ir:0", "float32", C.PROCESS, "degC"),
    _mb("WT-01.agitator_speed", "ir:2", "float32", C.PROCESS, "rpm"),
    _mb("WT-01.level", "ir:4", "float32", C.PROCESS, "%"),
    _mb("OT-01.temperature", "ir:10", "float32", C.PROCESS, "degC"),
    _mb("OT-01.agitator_speed", "ir:12", "float32", C.PROCESS, "rpm"),
    # PW-01 purified-water loop, CR-01 clean room: Modbus input registers
    _mb("PW-01.conductivity", "ir:20", "float32", C.ENVIRONMENT, "uS/cm", description="At 25 degC"),
    _mb("PW-01.toc", "ir:22", "float32", C.ENVIRONMENT, "ppb"),
    _mb("PW-01.loop_temperature", "ir:24", "float32", C.ENVIRONMENT, "degC"),
    _mb("CR-01.temperature", "ir:30", "float32", C.ENVIRONMENT, "degC"),
    _mb("CR-01.humidity", "ir:32", "float32", C.ENVIRONMENT, "%RH"),
    _mb("CR-01.differential_pressure", "ir:34", "float32", C.ENVIRONMENT, "Pa"),
    _mb("CR-01.door_open", "di:0", "bool", C.ENVIRONMENT),
)

TAG_INDEX: dict[str, SimTag] = {t.name: t for t in TAGS}

MODBUS_TABLE_SIZE: dict[str, int] = {"hr": 64, "ir": 64, "co": 16, "di": 16}
"""Valid addresses per table (0..size-1); unused ones read 0, anything beyond is an illegal address."""


def opcua_tags() -> list[SimTag]:
    return [t for t in TAGS if t.protocol == "opcua"]


def modbus_tags() -> list[SimTag]:
    return [t for t in TAGS if t.protocol == "modbus"]
