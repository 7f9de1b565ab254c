"""Cost of joint control: what a reload and a trace spend on specifications.

Builds the demo line's specification (config/demo.yaml's limits and quality rules), has a QA and a
regulator key sign it, then times:

* the canonical hash of the specification (what ``blackbox spec sign`` and every check computes);
* loading and verifying it with both signatures (what the agent does at start and on each reload;
  parsing the YAML is most of it);
* putting it in force on the configuration (``effective_config``);
* the store's check of a stored version (parse + both signatures, as the trace does per batch).

Usage: python benchmarks/joint_control.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.config import load_config
from blackbox.spec.approval import KeyRing, Role, add_signature, sign, signature_path, write_signatures
from blackbox.spec.canonical import canonical_bytes, canonical_sha256
from blackbox.spec.enforce import InForce, effective_config, judged
from blackbox.spec.model import approve, load_approved, parse_spec_data

DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median microseconds of one call."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    cfg = load_config(DEMO).config
    doc = {"id": "FC-050", "product": "FC-050", "version": 1, "reason": "benchmark", **judged(cfg)}
    keys: dict[Role, Ed25519PrivateKey] = {"qa": Ed25519PrivateKey.generate(),
                                           "regulator": Ed25519PrivateKey.generate()}
    ring = KeyRing((role, k.public_key()) for role, k in keys.items())
    sha = canonical_sha256(doc)
    sigs = None
    for role, key in keys.items():
        sigs = add_signature(sigs, "specification", sha, sign("specification", sha, role, key, role))
    assert sigs is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "FC-050.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        write_signatures(signature_path(path), sigs)
        approved = load_approved(path, ring)
        n_params = sum(len(v) for v in doc["parameters"].values())
        print(f"specification: {len(doc['parameters'])} tags, {n_params} limit sets, {len(doc['rules'])} rules, "
              f"{len(canonical_bytes(doc))} canonical bytes")
        print(f"canonical hash                    {timed(lambda: canonical_sha256(doc), args.repeat):8.0f} us")
        print(f"load + verify (agent, per reload) {timed(lambda: load_approved(path, ring), args.repeat):8.0f} us")
        in_force = InForce((approved,), ring)
        put = timed(lambda: effective_config(cfg, in_force), args.repeat)
        print(f"put in force (effective_config)   {put:8.0f} us")
        stored = sigs.to_json()
        print(f"store check of a stored version   "
              f"{timed(lambda: approve(parse_spec_data(doc), sigs, ring), args.repeat):8.0f} us"
              f"  ({len(stored['signatures'])} signatures)")


if __name__ == "__main__":
    main()
