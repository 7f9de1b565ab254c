"""The demo's joint control: a factory QA key, a regulator key, and the line's limits as an approved
specification (both keys are made at demo start; in a plant each party keeps its own)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blackbox.config.load import load_config
from blackbox.seal import generate_key_file, public_key_pem
from blackbox.spec.approval import Role, add_signature, sign, signature_path, write_signatures
from blackbox.spec.enforce import judged
from blackbox.spec.model import load_spec

SIGNERS: dict[Role, str] = {"qa": "Demo QA (factory)", "regulator": "Demo inspector (regulator)"}


@dataclass(frozen=True)
class DemoApprovers:
    spec_file: Path
    public_keys: dict[Role, str]
    """PEM per role, to enroll at the store."""


def approve_demo_config(config_path: Path, workdir: Path, *, product: str = "FC-050") -> DemoApprovers:
    """Turn the limits and quality rules of ``config_path`` into specification ``product`` v1, have the
    two demo keys sign it, and make the configuration name it and pin the keys (the file is rewritten)."""
    spec_file = workdir / f"{product}.spec.yaml"
    cfg = load_config(config_path).config
    qc = [q.model_dump(mode="json", exclude_none=True) for q in cfg.record.qc.get(product, [])]
    doc = {"id": product, "product": product, "version": 1,
           "reason": "Demo: the reference line's limits, rules and QC tests, approved at demo start",
           **judged(cfg), **({"qc": qc} if qc else {}), "retention": {"shelf_life_months": 36}}
    spec_file.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    sha = load_spec(spec_file).sha256
    sigfile = None
    pems: dict[Role, str] = {}
    for role in ("qa", "regulator"):
        key = generate_key_file(workdir / f"{role}.key")
        (workdir / f"{role}.pub.pem").write_text(public_key_pem(key.public_key()), encoding="ascii")
        pems[role] = public_key_pem(key.public_key())
        sigfile = add_signature(sigfile, "specification", sha, sign("specification", sha, role, key, SIGNERS[role]))
    if sigfile is None:
        raise RuntimeError("internal error: expected sigfile is not None")
    write_signatures(signature_path(spec_file), sigfile)
    data: dict[str, Any] = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data["specification"] = {"files": [str(spec_file)], "qa_keys": [str(workdir / "qa.pub.pem")],
                             "regulator_keys": [str(workdir / "regulator.pub.pem")]}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return DemoApprovers(spec_file, pems)
