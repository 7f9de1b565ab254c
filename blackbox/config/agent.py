"""The ``agent:`` section: the running agent's local interfaces."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blackbox.config.base import Strict


class AgentConfig(Strict):
    """The running agent's local interfaces. Changes here take effect after a restart, not on SIGHUP."""

    control_socket: Path = Field(default=Path("var/agent.sock"),
                                 description="Unix socket for blackbox status, tail, batch, alarms… (mode 0660).")
    metrics_port: int | None = Field(default=None, ge=0, lt=65536,
                                     description="Serve Prometheus metrics (/metrics) and a health check (/health) "
                                                 "on this TCP port; unset: off.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1,
                              description="Address the metrics endpoint listens on.")
    clock_jump_threshold: float = Field(default=1.0, gt=0,
                                        description="Seconds the wall clock may disagree with the monotonic clock "
                                                    "before it counts as a jump (a clock.jump event).")
