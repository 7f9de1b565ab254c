"""Gateway signing keys: create, load, identify, and exchange public keys.

The private key is a PEM PKCS#8 file readable by its owner only. It is created with mode 0600
from the first byte (never written and chmod-ed later) and never overwritten: replacing a key is
a rotation, which the chain must record, not a file operation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blackbox.seal.errors import KeyFileError, KeyFileExists, KeyPermissionError

_PEM_MARK = "-----BEGIN"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _kind(key: object) -> str:
    """'an RSA key', 'an EC key'…: for error messages (the classes' names are implementation details)."""
    kinds: list[tuple[tuple[type, ...], str]] = [
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA key"),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC (ECDSA) key"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA key"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448 key"),
        (
            (x25519.X25519PrivateKey, x25519.X25519PublicKey, x448.X448PrivateKey, x448.X448PublicKey),
            "an X25519/X448 key",
        ),
        ((Ed25519PrivateKey,), "an Ed25519 private key"),
    ]
    for classes, name in kinds:
        if isinstance(key, classes):
            return name
    return f"a {type(key).__name__} key"


def _public(key: Ed25519PublicKey | Ed25519PrivateKey) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key
    raise TypeError(f"expected an Ed25519 key, not {type(key).__name__}")


def raw_public_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public key (RFC 8032 encoding)."""
    return _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short key identifier written in batch headers: first 16 hex digits of SHA-256(raw public key)."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def fingerprint(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``SHA256:<64 hex>`` of the raw public key: what an operator compares when enrolling a key."""
    return "SHA256:" + hashlib.sha256(raw_public_bytes(public_key)).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM (what ``openssl pkeyutl -pubin`` reads)."""
    return (
        _public(public_key)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; fail if it exists (``FileExistsError``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow the mode; this makes it exact
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def generate_key_file(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Generate a gateway key and write it to ``path`` (PEM PKCS#8, mode 0600).

    The key is written to a temporary file in the same directory and hard-linked into place, so
    ``path`` either does not exist or holds the whole key, even after a power cut. An existing
    ``path`` is never touched: :class:`KeyFileExists`. Missing parent directories are created
    with mode 0700.
    """
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    data = _private_pem(key)
    if path.exists() or path.is_symlink():
        raise KeyFileExists(f"key file {path} already exists; refusing to overwrite it (move it away to rotate)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    _write_new(tmp, data)
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        raise KeyFileExists(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _write_new_or_exists(path, data)  # a filesystem without hard links: create in place
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return key


def _write_new_or_exists(path: Path, data: bytes) -> None:
    try:
        _write_new(path, data)
    except FileExistsError:
        raise KeyFileExists(f"key file {path} already exists; refusing to overwrite it") from None


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the gateway key; :class:`KeyFileError` (or a subclass) says what is wrong and how to fix it.

    Refuses a file that group or others may read (:class:`KeyPermissionError`), like ssh does.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create it with `blackbox keys init`") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyPermissionError(
            f"key file {path} has mode {mode:04o}, so other users can read the signing key; "
            f"fix it with: chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"key file {path} is encrypted; blackbox needs an unencrypted PEM key") from None
    except ValueError:
        raise KeyFileError(
            f"key file {path} is not a PEM private key (expected '-----BEGIN PRIVATE KEY-----', "
            f"as written by `blackbox keys init`)"
        ) from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic key types
        raise KeyFileError(f"key file {path} cannot be loaded: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} holds {_kind(key)}; blackbox signs with Ed25519")
    return key


def load_public_key(text_or_path: str | bytes | os.PathLike[str]) -> Ed25519PublicKey:
    """A public key from PEM text, raw 32 bytes as hex or base64, an OpenSSH line, or a file of those.

    ``Path`` objects are always files; a string is a file name only if it is none of the textual
    forms and names an existing file. Raises :class:`KeyFileError`.
    """
    if isinstance(text_or_path, os.PathLike):
        path = Path(text_or_path)
        try:
            return _parse_public(path.read_bytes(), str(path))
        except OSError as exc:
            raise KeyFileError(f"cannot read public key file {path}: {exc.strerror or exc}") from None
    if isinstance(text_or_path, bytes):
        if len(text_or_path) == 32:
            return Ed25519PublicKey.from_public_bytes(text_or_path)
        return _parse_public(text_or_path, "public key")
    key = _try_text(text_or_path.strip())
    if key is not None:
        return key
    if "\n" not in text_or_path and os.path.isfile(text_or_path):
        return load_public_key(Path(text_or_path))
    raise KeyFileError(
        "not an Ed25519 public key: expected PEM, 64 hex digits, base64 of 32 bytes, "
        "an 'ssh-ed25519' line, or the name of a file holding one"
    )


def _parse_public(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    key = _try_text(text) if text else None
    if key is None and len(data) == 32:
        key = Ed25519PublicKey.from_public_bytes(data)
    if key is None:
        raise KeyFileError(f"{where} does not hold an Ed25519 public key (PEM, hex, base64 or ssh-ed25519)")
    return key


def _try_text(text: str) -> Ed25519PublicKey | None:
    """Parse the textual forms; ``None`` if the text is none of them, error if it is a wrong key."""
    loaded: object
    if text.startswith(_PEM_MARK):
        try:
            loaded = serialization.load_pem_public_key(text.encode("ascii"))
        except Exception:
            raise KeyFileError("PEM text is not a public key (expected '-----BEGIN PUBLIC KEY-----')") from None
    elif text.startswith("ssh-ed25519 "):
        try:
            loaded = serialization.load_ssh_public_key(text.encode("ascii"))
        except Exception:
            raise KeyFileError("malformed ssh-ed25519 public key line") from None
    elif _HEX_KEY.fullmatch(text):
        loaded = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) == 32:
            loaded = Ed25519PublicKey.from_public_bytes(raw)
        else:
            try:
                loaded = serialization.load_der_public_key(raw)  # a PEM body without its armour
            except Exception:
                return None
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyFileError(f"the key is {_kind(loaded)}, not an Ed25519 public key")
    return loaded


# -- rotation: the successor key file ---------------------------------------------------------------


def next_key_path(path: str | os.PathLike[str]) -> Path:
    """Where a rotation keeps the successor of the key at ``path`` until the chain has switched to it."""
    path = Path(path)
    return path.with_name(path.name + ".next")


def promote_next_key(path: str | os.PathLike[str]) -> None:
    """Replace the key at ``path`` by its successor (``<path>.next``), atomically.

    Called only once the batch that records the rotation has been sealed with the old key: from
    then on the old key is never needed again, so it is overwritten rather than kept.
    """
    path = Path(path)
    os.replace(next_key_path(path), path)
    _fsync_dir(path.parent)


def set_aside_next_key(path: str | os.PathLike[str]) -> Path:
    """Move an unused successor key (a rotation that was never recorded) out of the way; return where."""
    path = Path(path)
    nxt = next_key_path(path)
    aside = nxt.with_name(f"{nxt.name}.unused-{secrets.token_hex(4)}")
    os.replace(nxt, aside)
    _fsync_dir(path.parent)
    return aside
