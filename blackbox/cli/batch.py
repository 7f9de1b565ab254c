"""Operator entries: ``blackbox batch start|phase|end``, ``blackbox material add``, ``blackbox qc add``.

Each command is recorded by the running agent before it answers, with who entered it (the name
given with ``--operator``, or the login name, qualified by the OS account the agent sees).
"""

from __future__ import annotations

import getpass
import math
from pathlib import Path
from typing import Any

import typer

from blackbox.cli.common import ConfigOpt, agent_call

OperatorOpt = typer.Option(None, "--operator", help="Who enters this (default: your login name).")
SignOpt = typer.Option(None, "--sign", help="Sign the entry as this operator account (the password is asked for).")


def signed(args: dict[str, Any], user: str | None, meaning: str = "performed",
           key: str = "signature") -> dict[str, Any]:
    """``args`` with the signature of ``user``, the password read from the terminal (never an argument)."""
    if user is None:
        return args
    password = getpass.getpass(f"password of {user} (signing: {meaning}): ")
    return {**args, key: {"user": user, "password": password}}

batch_app = typer.Typer(help="Start, advance and end production batches by hand (where no PLC tag carries them).\n\n"
                             "Example: blackbox batch start FC050-2026-1125-01 --product FC-050 -c blackbox.yaml",
                        no_args_is_help=True)
material_app = typer.Typer(help="Record materials consumed, entered by an operator.\n\n"
                                "Example: blackbox material add --material RM-001 --lot L-7 --target 361.5 "
                                "--actual 361.2 --scale SC-01 -c blackbox.yaml", no_args_is_help=True)
qc_app = typer.Typer(help="Record QC results, entered by an operator.\n\n"
                          "Example: blackbox qc add --test pH --value 6.1 --spec 5.5..6.5 --sample S-1 -c b.yaml",
                     no_args_is_help=True)


def _recorded(result: dict[str, Any]) -> None:
    where = f"batch {result['batch'] or '-'}, phase {result['phase'] or '-'}"
    ids = result.get("ids") or [None] * len(result["seqs"])
    for seq, kind, ref in zip(result["seqs"], result["events"], ids, strict=True):
        typer.echo(f"recorded {kind}{f' {ref}' if ref else ''} as seq {seq} ({where})")


@batch_app.command("start")
def batch_start(batch: str = typer.Argument(..., help="Batch number, e.g. FC050-2026-1125-01."),
                product: str = typer.Option(..., "--product", help="Product code, e.g. FC-050."),
                recipe: str | None = typer.Option(None, "--recipe", help="Recipe, e.g. R-FC-050."),
                recipe_version: str | None = typer.Option(None, "--recipe-version", help="Recipe version."),
                phase: str | None = typer.Option(None, "--phase", help="First phase, e.g. dispense."),
                operator: str | None = OperatorOpt, sign: str | None = SignOpt, config: Path = ConfigOpt) -> None:
    """Start a production batch: every reading from now on is attributed to it.

    Example: blackbox batch start FC050-2026-1125-01 --product FC-050 --recipe R-FC-050 --recipe-version 3 -c b.yaml
    """
    _recorded(agent_call(config, "batch.start", signed({"batch": batch, "product": product, "recipe": recipe,
                                                        "recipe_version": recipe_version, "phase": phase}, sign),
                         operator))


@batch_app.command("phase")
def batch_phase(phase: str = typer.Argument(..., help="The phase the batch enters, e.g. emulsify."),
                operator: str | None = OperatorOpt, sign: str | None = SignOpt, config: Path = ConfigOpt) -> None:
    """Move the active batch to another phase.

    Example: blackbox batch phase emulsify -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "batch.phase", signed({"phase": phase}, sign), operator))


@batch_app.command("end")
def batch_end(operator: str | None = OperatorOpt, sign: str | None = SignOpt, config: Path = ConfigOpt) -> None:
    """End the active batch.

    Example: blackbox batch end -c /etc/blackbox/blackbox.yaml
    """
    _recorded(agent_call(config, "batch.end", signed({}, sign), operator))


@material_app.command("add")
def material_add(material: str = typer.Option(..., "--material", help="Material code, e.g. RM-001."),
                 lot: str = typer.Option(..., "--lot", help="Supplier lot."),
                 target: float = typer.Option(..., "--target", help="Target quantity."),
                 actual: float = typer.Option(..., "--actual", help="Quantity weighed."),
                 eng_unit: str = typer.Option("kg", "--unit", help="Unit of target and actual."),
                 scale: str = typer.Option(..., "--scale", help="Scale id, e.g. SC-01."),
                 tolerance: float | None = typer.Option(None, "--tolerance", help="Allowed |actual - target|."),
                 tolerance_pct: float | None = typer.Option(None, "--tolerance-pct", help="…or in % of target."),
                 verifier: str | None = typer.Option(None, "--verifier", help="Who verified the weighing."),
                 batch: str | None = typer.Option(None, "--batch", help="Batch it belongs to (default: the active)."),
                 verifier_sign: str | None = typer.Option(None, "--verifier-sign", help="The second person signs "
                                                          "the weighing as verified now (asked for the password)."),
                 operator: str | None = OperatorOpt, sign: str | None = SignOpt, config: Path = ConfigOpt) -> None:
    """Record a material lot consumed (weighed by hand).

    Example: blackbox material add --material RM-010 --lot GLY-77 --target 25 --actual 25.02 --scale SC-02 \
--tolerance 0.05 -c /etc/blackbox/blackbox.yaml
    """
    _finite(target=target, actual=actual, tolerance=tolerance, tolerance_pct=tolerance_pct)
    args = signed({"material": material, "lot": lot, "target": target, "actual": actual, "eng_unit": eng_unit,
                   "scale": scale, "tolerance": tolerance, "tolerance_pct": tolerance_pct, "verifier": verifier,
                   "batch": batch}, sign)
    _recorded(agent_call(config, "material.add", signed(args, verifier_sign, "verified", "verifier_signature"),
                         operator))


@qc_app.command("add")
def qc_add(test: str = typer.Option(..., "--test", help="Test name, e.g. pH, viscosity, TAMC."),
           value: str = typer.Option(..., "--value", help="Result: a number, or a text such as 'absent'."),
           sample: str = typer.Option(..., "--sample", help="Sample id."),
           spec: str | None = typer.Option(None, "--spec", help="Specification LOW..HIGH (either side may be empty)."),
           eng_unit: str = typer.Option("", "--unit", help="Unit of the value."),
           passed: bool | None = typer.Option(None, "--pass/--fail", help="The verdict, for a result without a "
                                              "numeric specification."),
           batch: str | None = typer.Option(None, "--batch", help="Batch it belongs to (default: the active)."),
           operator: str | None = OperatorOpt, sign: str | None = SignOpt, config: Path = ConfigOpt) -> None:
    """Record a QC result, judged against its specification.

    Example: blackbox qc add --test viscosity --value 11200 --unit mPa.s --spec 8000..15000 --sample S-3 -c b.yaml
    """
    low, high = _spec(spec)
    number = _number(value)
    _recorded(agent_call(config, "qc.add", signed({
        "test": test, "value": value if number is None else number, "eng_unit": eng_unit or None, "spec_low": low,
        "spec_high": high, "pass": passed, "sample": sample, "batch": batch}, sign), operator))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _spec(spec: str | None) -> tuple[float | None, float | None]:
    if spec is None:
        return None, None
    parts = [p.strip() for p in spec.split("..")]
    bounds = [None if not p else _number(p) for p in parts]
    if len(parts) != 2 or not any(parts) or any(b is None and p for b, p in zip(bounds, parts, strict=True)):
        typer.echo(f"error: --spec {spec!r} is not LOW..HIGH with numbers (e.g. 5.5..6.5, ..40 or 8000..)", err=True)
        raise typer.Exit(2)
    return bounds[0], bounds[1]


def _finite(**values: float | None) -> None:
    for name, v in values.items():
        if v is not None and not math.isfinite(v):
            typer.echo(f"error: --{name.replace('_', '-')} must be a finite number", err=True)
            raise typer.Exit(2)
