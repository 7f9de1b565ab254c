"""The ``blackbox`` application: every command and command group (the light ones are in :mod:`blackbox.cli.root`)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from blackbox.cli import (
    alarms,
    batch,
    config_cmd,
    diag,
    joint_cmd,
    keys,
    record_cmd,
    spec_cmd,
    store_cmd,
    tlog_cmd,
    verify_cmd,
    web_cmd,
)
from blackbox.cli.root import app as app  # re-exported: completed below with every command
from blackbox.cli.root import plain_help
from blackbox.model import iso

app.add_typer(config_cmd.app, name="config")
app.add_typer(diag.app, name="diag")
app.add_typer(keys.app, name="keys")
app.add_typer(store_cmd.app, name="store")
store_cmd.app.add_typer(tlog_cmd.keys_app, name="keys")
store_cmd.app.command("checkpoint")(tlog_cmd.checkpoint)
store_cmd.app.command("proof")(tlog_cmd.proof)
app.command("receipts")(tlog_cmd.receipts)
app.command("verify-checkpoint")(tlog_cmd.verify_checkpoint)
app.add_typer(alarms.app, name="alarms")
app.add_typer(spec_cmd.app, name="spec")
store_cmd.app.add_typer(joint_cmd.approver_app, name="approver")
store_cmd.app.add_typer(joint_cmd.spec_app, name="spec")
store_cmd.app.add_typer(joint_cmd.action_app, name="action")
store_cmd.app.command("retention")(joint_cmd.retention)
app.add_typer(batch.batch_app, name="batch")
app.add_typer(batch.material_app, name="material")
app.add_typer(batch.qc_app, name="qc")
batch.batch_app.command("release")(record_cmd.batch_release)
batch.material_app.command("verify")(record_cmd.material_verify)
app.add_typer(record_cmd.operator_app, name="operator")
app.add_typer(record_cmd.deviation_app, name="deviation")
app.add_typer(record_cmd.cleaning_app, name="cleaning")
app.add_typer(record_cmd.lot_app, name="lot")
app.command("genealogy")(record_cmd.genealogy_cmd)
app.command("verify-batch")(verify_cmd.verify_batch)
app.command("batches")(web_cmd.batches)




@app.command()
def run(config: Path = typer.Option(..., "--config", "-c", help="Configuration file (YAML).")) -> None:
    """Run the edge agent: poll the sources, buffer, apply rules, seal and forward until SIGTERM.

    SIGHUP reloads the configuration file (recorded as a config.applied event).

    Example: blackbox run -c /etc/blackbox/blackbox.yaml
    """
    from blackbox.cli.agent_run import run_agent

    code = run_agent(config)
    if code:
        raise typer.Exit(code)


@app.command()
def simulate(seed: int = typer.Option(1, help="Random seed: the same seed plays the same line."),
             speed: float = typer.Option(1.0, help="Simulated seconds per wall-clock second."),
             batches: int = typer.Option(0, help="Production batches to run; 0 runs forever."),
             opcua_port: int = typer.Option(4840, help="OPC UA server port."),
             modbus_port: int = typer.Option(5020, help="Modbus TCP server port."),
             host: str = typer.Option("127.0.0.1", help="Address to listen on.")) -> None:
    """Play the reference cream line: an OPC UA server (EM-01, QC-01) and a Modbus server (the rest).

    Example: blackbox simulate --speed 60 --batches 1
    """
    from blackbox.sim.runner import run_simulator

    for name, port in (("--opcua-port", opcua_port), ("--modbus-port", modbus_port)):
        problem = _cannot_listen(host, port)
        if problem:
            typer.echo(f"error: cannot serve on {host}:{port} ({name}): {problem}", err=True)
            raise typer.Exit(1)
    async def main() -> str:
        play = asyncio.ensure_future(run_simulator(seed=seed, speed=speed, batches=batches or None,
                                                   opcua_port=opcua_port, modbus_port=modbus_port, host=host))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, play.cancel)
        try:
            await play
        except asyncio.CancelledError:
            return "simulator stopped (signal)"
        return f"simulator stopped: {batches} batch(es) played"

    try:
        typer.echo(asyncio.run(main()), err=True)
    except OSError as exc:  # a port in use, an address not on this machine
        typer.echo(f"error: cannot serve on {host} (OPC UA port {opcua_port}, Modbus port {modbus_port}): "
                   f"{exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


def _cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port (a port in use, an address not on this machine), or None."""
    import socket

    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


@app.command()
def demo(workdir: Path | None = typer.Option(None, "--dir", help="Keep the demo's files here (default: a temp dir)."),
         seed: int = typer.Option(1, help="Simulator seed."),
         speed: float = typer.Option(600.0, help="Simulated seconds per wall-clock second."),
         json_out: bool = typer.Option(False, "--json", help="Print the trace report as JSON.")) -> None:
    """Run simulator, broker, agent and store together for one batch and print its trace report.

    Example: blackbox demo --dir ./demo-out
    """
    from blackbox.demo import run_demo
    from blackbox.store.trace import render_text

    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            typer.echo(f"error: cannot create the demo folder {workdir}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
    result = asyncio.run(run_demo(workdir, seed=seed, speed=speed))
    typer.echo(result.report.to_json() if json_out else render_text(result.report))
    typer.echo(f"demo files in {result.workdir}", err=True)
    if result.report.integrity.verdict != "verified":
        raise typer.Exit(1)


@app.command()
def trace(batch: str | None = typer.Argument(None, help="Production batch number, e.g. FC050-2026-1125-01."),
          config: Path | None = typer.Option(None, "--config", "-c", help="Configuration with a store: section."),
          db: str | None = typer.Option(None, "--db", help="Store database URL (instead of --config)."),
          json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
          lot: str | None = typer.Option(None, "--lot", help="Instead of a batch: every batch that consumed this "
                                         "supplier lot.")) -> None:
    """Print the regulator's trace report of one production batch from the store, or trace a lot back.

    Example: blackbox trace FC050-2026-1125-01 --db sqlite:///var/store.sqlite --json
             blackbox trace --lot LOT-W-0001 -c store.yaml
    """
    from blackbox.store.trace import BatchNotFound, render_text, reverse_lot, trace_batch

    if (batch is None) == (lot is None):
        typer.echo("error: give a batch number or --lot, not both", err=True)
        raise typer.Exit(2)
    engine = store_cmd.open_reader(config, db)
    if lot is not None:
        with store_cmd.database_errors():
            uses = reverse_lot(engine, lot)
        if json_out:
            typer.echo("[" + ",".join(u.model_dump_json() for u in uses) + "]")
        for u in [] if json_out else uses:
            typer.echo(f"{u.site}/{u.gateway}  {u.batch or '-'}  {u.product or '-'}  {u.material or '-'}  "
                       f"{u.actual} of {u.target} {u.eng_unit or ''}  {iso(u.ts_us)}")
        if not uses:
            typer.echo(f"no batch consumed lot {lot!r}", err=True)
            raise typer.Exit(1)
        return
    if batch is None:
        raise RuntimeError("internal error: expected batch is not None")
    try:
        with store_cmd.database_errors():
            report = trace_batch(engine, batch)
    except BatchNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.to_json() if json_out else render_text(report))


plain_help(app)
