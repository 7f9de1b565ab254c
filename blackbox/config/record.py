"""The ``record:`` section: operator signatures, QC release, cleaning validity."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blackbox.config.base import Strict


class QcRequirement(Strict):
    """A QC test a product's batches need before release, with its specification (optional)."""

    test: str = Field(min_length=1, description="Test name, as entered with the result (e.g. pH).")
    low: float | None = Field(default=None, description="Lowest value within specification.")
    high: float | None = Field(default=None, description="Highest value within specification.")


class RecordConfig(Strict):
    """The complete batch record: operator signatures, release, cleaning validity."""

    operators_file: Path = Field(default=Path("var/operators.json"),
                                 description="Operator accounts (hashed passwords, mode 0600). Once it holds an "
                                             "account, every operator entry must be signed.")
    lockout_after: int = Field(default=5, ge=1, description="Wrong passwords in a row that lock an account.")
    verified_weighings: bool = Field(default=True, description="A weighing is complete only once a second person "
                                     "(not the one who weighed) verified it; release waits for it.")
    qc: dict[str, list[QcRequirement]] = Field(default_factory=dict, description="Per product code: the QC tests "
                                               "required before release, with their specifications.")
    units: list[str] = Field(default_factory=list, description="Equipment units a batch on this line uses; their "
                             "cleaning is checked when a batch starts.")
    cleaning_valid_hours: dict[str, float] = Field(default_factory=dict, description="Per unit: hours a cleaning "
                                                   "stays valid (default: cleaning_valid_hours_default).")
    cleaning_valid_hours_default: float = Field(default=72.0, gt=0, description="Hours a cleaning stays valid.")
