"""``blackbox run``: the edge agent until SIGTERM, started without typer.

The agent runs for months, and every module it imports stays in its memory: the command-line
application (typer, click and every command's module, about 2.5 MiB) is not among them.
:func:`blackbox.cli.entry.main` hands ``run -c FILE`` here directly (:mod:`blackbox.cli.quick`);
typer's ``run`` command (``--help``, unusual spellings) calls the same function.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from blackbox.cli.config_errors import EXIT_CONFIG, report_config_error


def run_agent(config: Path) -> int:
    """Run the agent of ``config`` until SIGTERM or SIGINT (SIGHUP reloads); its exit status."""
    from blackbox.agent.runtime import Agent
    from blackbox.buffer import BufferError
    from blackbox.config import ConfigError, load_config_forked
    from blackbox.glibc_malloc import fix_mmap_threshold, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: one malloc arena, not one per thread
    fix_mmap_threshold()  # a large batch's buffers go back to the system when freed
    try:
        loaded = load_config_forked(config)  # the agent runs for months: its memory is the models only
    except ConfigError as exc:
        report_config_error(config, exc)
        return EXIT_CONFIG

    async def main() -> None:
        agent = Agent(loaded)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
        await agent.run(stop)

    try:
        asyncio.run(main())
    except BufferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

