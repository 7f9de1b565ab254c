"""Key files: created 0600 and never overwritten, loaded only when private, public keys exchanged."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blackbox.seal import (
    KeyFileError,
    KeyFileExists,
    KeyPermissionError,
    fingerprint,
    generate_key_file,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from blackbox.seal.keys import raw_public_bytes


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def same(a: Ed25519PublicKey | Ed25519PrivateKey, b: Ed25519PublicKey | Ed25519PrivateKey) -> bool:
    return raw_public_bytes(a) == raw_public_bytes(b)


def test_generate_writes_a_0600_pem_that_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "gateway.key"  # the parent is created too
    key = generate_key_file(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert same(load_private_key(path), key)
    assert [p.name for p in path.parent.iterdir()] == ["gateway.key"]  # no temporary file left


def test_generate_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert mode(tmp_path / "k") == 0o600


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    generate_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileExists, match="refusing to overwrite"):
        generate_key_file(path)
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_generate_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "gateway.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileExists):
        generate_key_file(link)
    assert not (tmp_path / "elsewhere").exists()


def test_generate_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "gateway.key"
    key = generate_key_file(path)
    assert mode(path) == 0o600 and same(load_private_key(path), key)
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(KeyFileExists):
        generate_key_file(path)


def test_loading_a_world_readable_key_fails_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    generate_key_file(path)
    path.chmod(0o644)
    with pytest.raises(KeyPermissionError) as info:
        load_private_key(path)
    message = str(info.value)
    assert "0644" in message and f"chmod 600 {path}" in message
    path.chmod(0o640)
    with pytest.raises(KeyPermissionError):
        load_private_key(path)
    path.chmod(0o400)  # narrower than 0600 is fine
    load_private_key(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist; create it with `blackbox keys init`"):
        load_private_key(tmp_path / "nope.key")


def write_0600(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_wrong_kind_of_key_file(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    ec_pem = ec.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="holds an EC \\(ECDSA\\) key; blackbox signs with Ed25519"):
        load_private_key(write_0600(tmp_path / "ec.key", ec_pem))

    key = Ed25519PrivateKey.generate()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(write_0600(tmp_path / "enc.key", encrypted))

    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(write_0600(tmp_path / "pub.key", public_key_pem(key).encode()))
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(write_0600(tmp_path / "junk.key", b"hello"))
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_private_key(tmp_path)


def test_key_id_and_fingerprint() -> None:
    key = Ed25519PrivateKey.generate()
    raw = raw_public_bytes(key)
    digest = hashlib.sha256(raw).hexdigest()
    assert key_id(key.public_key()) == key_id(key) == digest[:16]
    assert fingerprint(key.public_key()) == "SHA256:" + digest
    with pytest.raises(TypeError):
        key_id(generate_private_key(SECP256R1()))  # type: ignore[arg-type]


def test_public_key_in_every_accepted_form(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    raw = raw_public_bytes(public)
    pem = public_key_pem(public)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    pem_file = tmp_path / "gateway.pub.pem"
    pem_file.write_text(pem)
    hex_file = tmp_path / "gateway.pub.hex"
    hex_file.write_text(raw.hex() + "\n")
    raw_file = tmp_path / "gateway.pub.raw"
    raw_file.write_bytes(raw)
    pem_body = "".join(pem.strip().splitlines()[1:-1])

    forms: list[str | bytes | Path] = [
        pem,
        "\n  " + pem + "\n",
        pem.encode(),
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        pem_body,
        ssh,
        raw,
        pem_file,
        str(pem_file),
        hex_file,
        raw_file,
    ]
    for form in forms:
        assert same(load_public_key(form), public), form


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not an Ed25519 public key"),
        ("zz" * 32, "not an Ed25519 public key"),
        ("no-such-file.pem", "not an Ed25519 public key"),
        ("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----", "PEM text is not a public key"),
        ("ssh-ed25519 AAAA", "malformed ssh-ed25519"),
        (base64.b64encode(b"x" * 31).decode(), "not an Ed25519 public key"),
    ],
)
def test_public_key_errors(text: str, match: str) -> None:
    with pytest.raises(KeyFileError, match=match):
        load_public_key(text)


def test_public_key_of_the_wrong_type(tmp_path: Path) -> None:
    ec_pem = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="the key is an EC \\(ECDSA\\) key, not an Ed25519 public key"):
        load_public_key(ec_pem.decode())
    with pytest.raises(KeyFileError, match="cannot read public key file"):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError, match="does not hold an Ed25519 public key"):
        load_public_key(write_0600(tmp_path / "junk", b"\xff\xfe junk"))
