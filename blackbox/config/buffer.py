"""The ``buffer:`` section: the local SQLite buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from blackbox.config.base import Strict


class BufferConfig(Strict):
    path: Path = Field(default=Path("var/buffer.sqlite"), description="SQLite file of the buffer.")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss, NORMAL only crashes."
    )
    quota_mb: float = Field(default=1024, ge=1, description="Disk quota of the buffer's database file, MB. "
                            "Delivered data is pruned first; only then is the oldest undelivered data dropped, "
                            "recorded as a buffer.gap event and a critical alarm.")
    retention_hours: float = Field(default=24.0, ge=0, description="Hours delivered data is kept for local "
                                   "diagnosis before it is pruned (sooner if the quota needs the space).")
