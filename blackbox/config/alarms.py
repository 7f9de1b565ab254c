"""The ``alarms:`` section: alarm management (chattering, floods, shelving)."""

from __future__ import annotations

from pydantic import Field, model_validator

from blackbox.config.base import Seconds, Strict


class AlarmsConfig(Strict):
    """Alarm management (ISA-18.2): chattering, floods, shelving."""

    chatter_count: int = Field(default=3, ge=2, description="An alarm that starts this many times within "
                               "chatter_window is chattering: it then clears only after chatter_release.")
    chatter_window: float = Field(default=60.0, gt=0, description="Seconds, see chatter_count.")
    chatter_release: Seconds = Field(default=60.0, description="Seconds a chattering alarm's condition must stay "
                                     "normal before it clears.")
    flood_count: int = Field(default=10, ge=1, description="A flood starts when more than this many alarms "
                             "start within flood_window.")
    flood_window: float = Field(default=600.0, gt=0, description="Seconds, see flood_count.")
    flood_end: int = Field(default=5, ge=1, description="The flood ends when fewer than this many alarms "
                           "started within flood_window.")
    max_shelve: float = Field(default=8 * 3600.0, gt=0, description="Longest an operator may shelve an alarm, "
                              "seconds.")

    @model_validator(mode="after")
    def _flood_hysteresis(self) -> AlarmsConfig:
        if self.flood_end > self.flood_count:
            raise ValueError("flood_end cannot exceed flood_count")
        return self
