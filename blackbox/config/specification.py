"""The ``specification:`` section: approved specifications the limits and rules come from (joint control)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blackbox.config.base import Strict


class SpecificationConfig(Strict):
    """Joint control (docs/joint-control.md): limits and quality rules come only from specifications
    approved by the factory QA and the regulator. Without this section the configured limits apply,
    and every report says they are unapproved."""

    files: list[Path] = Field(min_length=1, description="Specification files (YAML); each one's signatures "
                              "are in <file>.sig. One per product; limits and rules are taken from them only.")
    qa_keys: list[Path] = Field(min_length=1, description="Public keys (PEM) of the factory QA approvers.")
    regulator_keys: list[Path] = Field(min_length=1, description="Public keys (PEM) of the regulator. Only the "
                                       "public key: the regulator's private key never comes to the gateway.")
