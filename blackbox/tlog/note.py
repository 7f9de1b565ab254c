"""C2SP signed notes and ``tlog-checkpoint`` tree heads, with Ed25519 keys.

The formats are those of https://c2sp.org/signed-note and https://c2sp.org/tlog-checkpoint, as
implemented by Go's ``golang.org/x/mod/sumdb/note`` (and read by transparency-log witnesses), so
that a third party can check our checkpoints without our code:

* a **note** is UTF-8 text ending in a newline, a blank line, then signature lines
  ``— <key name> <base64(key hash ‖ signature)>`` (an em dash, U+2014), each ending in a newline;
  the signature covers the text (with its final newline, without the blank line);
* the **key hash** is the first 4 bytes (big-endian) of ``SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)``;
* a **verifier key** (``vkey``) is ``<name>+<8 hex digits of the key hash>+<base64(0x01 ‖ public key)>``;
  a key name is non-empty UTF-8 without white space or ``+``;
* a **checkpoint** is the note text ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` (then optional
  extension lines), signed by the log's key, whose name is the log's origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
SIG_PREFIX = "— "
MAX_SIGNATURES = 100
"""Go's ``note.Open`` refuses notes with more signature lines than this."""


class NoteError(ValueError):
    """A note, a key string or a checkpoint is malformed or its signature does not verify."""


def valid_name(name: str) -> bool:
    """A key name as Go's ``note`` package accepts it: non-empty, no white space, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_hash(name: str, public_key: bytes) -> int:
    """The 32-bit key hash of a key named ``name`` (``public_key``: 32 raw Ed25519 bytes)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}: it must be non-empty, without spaces or '+'")

    @property
    def key_hash(self) -> int:
        return key_hash(self.name, raw_public(self.public_key))

    @property
    def vkey(self) -> str:
        """``name+hash+base64(0x01 ‖ public key)``: what a verifier pins (Go: ``note.NewVerifier``)."""
        raw = bytes([ALG_ED25519]) + raw_public(self.public_key)
        return f"{self.name}+{self.key_hash:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key that signs notes."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key())

    def sign(self, text: str) -> str:
        """The signed note of ``text`` (which must end in a newline), with this key's one signature."""
        _check_text(text)
        verifier = self.verifier  # checks the name
        sig = self.private_key.sign(text.encode())
        blob = struct.pack(">I", verifier.key_hash) + sig
        return f"{text}\n{SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


def parse_vkey(vkey: str) -> Verifier:
    """The verifier of a ``name+hash+base64`` key string, as strictly as Go's ``note.NewVerifier``."""
    name, _, rest = vkey.partition("+")
    hash16, _, key64 = rest.partition("+")
    if len(hash16) != 8 or not all(c in "0123456789abcdefABCDEF" for c in hash16) or not valid_name(name):
        raise NoteError(f"malformed verifier key {vkey!r}: expected name+8 hex digits+base64 key")
    key = _b64(key64)
    if key is None or not key:
        raise NoteError(f"malformed verifier key {vkey!r}: the key is not base64")
    if key[0] != ALG_ED25519 or len(key) != 33:
        raise NoteError(f"verifier key {vkey!r} is not an Ed25519 key")
    if int(hash16, 16) != key_hash(name, key[1:]):
        raise NoteError(f"verifier key {vkey!r}: the key hash does not match the name and key")
    return Verifier(name, Ed25519PublicKey.from_public_bytes(key[1:]))


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("malformed note: the text must end in a newline")
    for c in text:
        if ord(c) < 0x20 and c != "\n":
            raise NoteError(f"malformed note: control character {c!r} in the text")


@dataclass(frozen=True)
class Signature:
    name: str
    key_hash: int
    signature: bytes


def split_note(note: str | bytes) -> tuple[str, list[Signature]]:
    """The text and signature lines of a note, checked as Go's ``note.Open`` checks them."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: not UTF-8") from None
    for c in note:
        if (ord(c) < 0x20 and c != "\n") or c == "\ufffd":
            raise NoteError(f"malformed note: character {c!r}")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, sigs = note[: split + 1], note[split + 2 :]
    if not sigs or not sigs.endswith("\n"):
        raise NoteError("malformed note: no signature, or the last line does not end in a newline")
    out: list[Signature] = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed note: signature line {line[:80]!r} does not start with '— '")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        blob = _b64(b64)
        if blob is None or not valid_name(name) or not b64 or len(blob) < 5:
            raise NoteError(f"malformed note: bad signature line {line[:80]!r}")
        out.append(Signature(name, int(struct.unpack(">I", blob[:4])[0]), blob[4:]))
        if len(out) > MAX_SIGNATURES:
            raise NoteError("malformed note: too many signatures")
    return text, out


def open_note(note: str | bytes, verifier: Verifier) -> str:
    """The text of ``note`` if ``verifier``'s key signed it; :class:`NoteError` otherwise.

    Signatures by other keys are ignored (a witness may cosign); a signature line with this key's
    name and hash that does not verify is an error, as in Go.
    """
    text, sigs = split_note(note)
    ours = [s for s in sigs if s.name == verifier.name and s.key_hash == verifier.key_hash]
    if not ours:
        raise NoteError(f"the note is not signed by {verifier.name}+{verifier.key_hash:08x}")
    message = text.encode()
    for s in ours:
        if not verifier.verify(message, s.signature):
            raise NoteError(f"invalid signature by {verifier.name}+{verifier.key_hash:08x}")
    return text


# -- checkpoints -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and root hash (``extensions``: further text lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        if not self.origin or "\n" in self.origin:
            raise NoteError(f"invalid origin {self.origin!r}")
        if self.size < 0 or len(self.root) != 32:
            raise NoteError("a checkpoint needs a size >= 0 and a 32-byte root hash")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint in a note's text (``tlog-checkpoint``: origin, decimal size, base64 root)."""
        if not text.endswith("\n"):
            raise NoteError("malformed checkpoint: the text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("malformed checkpoint: fewer than three lines")
        origin, size_text, root_text, *ext = lines
        if not origin:
            raise NoteError("malformed checkpoint: empty origin line")
        if not size_text.isascii() or not size_text.isdigit() or str(int(size_text)) != size_text:
            raise NoteError(f"malformed checkpoint: tree size {size_text!r} is not a decimal number")
        root = _b64(root_text)
        if root is None or len(root) != 32:
            raise NoteError("malformed checkpoint: the root is not a base64 SHA-256 hash")
        if any(not line for line in ext):
            raise NoteError("malformed checkpoint: empty extension line")
        return cls(origin, int(size_text), root, tuple(ext))

    def sign(self, signer: Signer) -> str:
        return signer.sign(self.text())


def open_checkpoint(note: str | bytes, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """The checkpoint of a signed note, verified with ``verifier`` and (by default) for its origin.

    C2SP: the origin must be the one the verifier expects; by convention here it is the key's name.
    """
    cp = Checkpoint.parse(open_note(note, verifier))
    expected = verifier.name if origin is None else origin
    if cp.origin != expected:
        raise NoteError(f"checkpoint of log {cp.origin!r}, expected {expected!r}")
    return cp
