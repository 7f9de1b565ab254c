"""The ``site:`` section: the factory and line this gateway records."""

from __future__ import annotations

from pydantic import Field, field_validator

from blackbox.config.base import Identifier, Strict, known_timezone


class SiteConfig(Strict):
    id: Identifier = Field(description="Short site id used in MQTT topics and store authorisation, e.g. SH-PD-01.")
    name: str = Field(min_length=1, description="Factory name as registered with the regulator.")
    licence: str = Field(min_length=1, description="Production licence number of the site.")
    line: str = Field(default="L1", min_length=1, description="Production line this gateway records.")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the site: the store's pages "
                          "show the site's times in it.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return known_timezone(v)
