"""The ``context:`` section: tags that carry batch, phase, lots consumed and QC results."""

from __future__ import annotations

from pydantic import Field

from blackbox.config.base import Strict


class MaterialTrigger(Strict):
    """A weighing that completes (``trigger`` changes) records a material lot consumed."""

    trigger: str
    material: str
    lot: str
    target: str
    actual: str
    scale: str | None = None
    operator: str | None = None
    tolerance: str | None = Field(default=None, description="Tag with the allowed |actual - target|, in the "
                                  "actual's unit (per material, from the recipe).")
    tolerance_pct: float | None = Field(default=None, ge=0, description="Allowed deviation in % of target, "
                                        "when no tolerance tag is given.")


class QcTrigger(Strict):
    """A new QC sample (``trigger`` changes) records one result per test tag."""

    trigger: str
    sample: str
    tests: dict[str, str] = Field(description="Test name -> tag carrying its value.")


class ContextConfig(Strict):
    """Tags that carry the production context (SPEC §5); absent ones come from operator commands."""

    batch_tag: str | None = None
    product_tag: str | None = None
    recipe_tag: str | None = None
    recipe_version_tag: str | None = None
    phase_tag: str | None = None
    idle_values: list[str] = Field(default_factory=lambda: ["", "idle", "0"])
    materials: list[MaterialTrigger] = Field(default_factory=list)
    qc: list[QcTrigger] = Field(default_factory=list)
