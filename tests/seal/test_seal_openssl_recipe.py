"""The third-party recipe in docs/batch-format.md works, run exactly as written, with real tools.

The shell blocks are cut out of the document and run unchanged by /bin/sh in a directory holding
``batch.bbx`` and ``gateway.pub.pem``, so the document cannot drift from the format.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from services import unavailable

from blackbox.seal import SealedBatch, fingerprint, open_batch, public_key_pem, seal_batch
from blackbox.seal.header import encode_header

from .helpers import make_records

DOC = Path(__file__).resolve().parents[2] / "docs" / "batch-format.md"


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        unavailable(f"`{name}` (to check the batch-format recipe)")


def recipe(name: str) -> str:
    """The ```sh block that follows ``<!-- recipe:NAME`` in the document."""
    match = re.search(rf"<!-- recipe:{name}\b[^\n]*-->\n```sh\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/batch-format.md has no recipe:{name} block"
    return match.group(1)


def run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)


def write_batch(directory: Path, sealed: SealedBatch, key: Ed25519PrivateKey) -> None:
    (directory / "batch.bbx").write_bytes(sealed.wire)
    (directory / "gateway.pub.pem").write_text(public_key_pem(key.public_key()))


def sealed_batch(seal_args: dict[str, Any], compression: str = "zstd") -> SealedBatch:
    return seal_batch(make_records() * 1, compression=compression, **seal_args)


def test_openssl_recipe_verifies_a_good_batch(
    tmp_path: Path, seal_args: dict[str, Any], key: Ed25519PrivateKey
) -> None:
    require_tool("openssl")
    sealed = sealed_batch(seal_args)
    write_batch(tmp_path, sealed, key)

    result = run(recipe("verify"), tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert f"{sealed.hash}  signed.bin" in result.stdout  # step 3: the chain hash
    assert "BBX1" in result.stdout
    assert (tmp_path / "header.json").read_bytes() == encode_header(sealed.header)
    assert json.loads((tmp_path / "header.json").read_bytes()) == sealed.header.to_dict()
    assert '"payload_sha256": "' + sealed.header.payload_sha256 in result.stdout  # json.tool output
    assert (tmp_path / "payload.bin").read_bytes() == open_batch(sealed.wire).payload


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
def test_openssl_recipe_rejects_a_tampered_batch(
    tmp_path: Path, seal_args: dict[str, Any], key: Ed25519PrivateKey, where: str
) -> None:
    require_tool("openssl")
    sealed = sealed_batch(seal_args)
    write_batch(tmp_path, sealed, key)
    wire = bytearray(sealed.wire)
    wire[{"header": 20, "payload": len(wire) - 100, "signature": len(wire) - 10}[where]] ^= 0x01
    (tmp_path / "batch.bbx").write_bytes(bytes(wire))

    result = run(recipe("verify"), tmp_path)

    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr
    assert "signed.bin" not in result.stdout  # set -e stopped before the hash was printed


def test_openssl_recipe_rejects_another_gateways_key(
    tmp_path: Path, seal_args: dict[str, Any], key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    require_tool("openssl")
    write_batch(tmp_path, sealed_batch(seal_args), other_key)
    result = run(recipe("verify"), tmp_path)
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_records_recipe_recovers_the_hashed_document(
    tmp_path: Path, seal_args: dict[str, Any], key: Ed25519PrivateKey
) -> None:
    require_tool("openssl")
    require_tool("zstd")
    sealed = sealed_batch(seal_args)
    write_batch(tmp_path, sealed, key)
    assert run(recipe("verify"), tmp_path).returncode == 0

    result = run(recipe("records"), tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"{sealed.header.payload_sha256}  records.json" in result.stdout
    document = json.loads((tmp_path / "records.json").read_bytes())
    assert len(document["r"]) == sealed.header.n_readings
    assert len(document["e"]) == sealed.header.n_events


def test_zlib_one_liner_from_the_document(tmp_path: Path, seal_args: dict[str, Any], key: Ed25519PrivateKey) -> None:
    require_tool("openssl")
    sealed = sealed_batch(seal_args, compression="zlib")
    write_batch(tmp_path, sealed, key)
    assert run(recipe("verify"), tmp_path).returncode == 0
    match = re.search(r"`(python3 -c 'import sys, zlib;[^`]*)`", DOC.read_text())
    assert match, "the zlib one-liner is missing from docs/batch-format.md"

    result = run(match.group(1), tmp_path)

    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256((tmp_path / "records.json").read_bytes()).hexdigest()
    assert digest == sealed.header.payload_sha256


def test_fingerprint_command_from_the_document(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    require_tool("openssl")
    (tmp_path / "gateway.pub.pem").write_text(public_key_pem(key.public_key()))
    match = re.search(r"`(openssl pkey -pubin -in gateway\.pub\.pem[^`]*sha256sum)`", DOC.read_text())
    assert match, "the fingerprint command is missing from docs/batch-format.md"

    result = run(match.group(1), tmp_path)

    assert result.returncode == 0, result.stderr
    assert "SHA256:" + result.stdout.split()[0] == fingerprint(key.public_key())
