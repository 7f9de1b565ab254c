"""Signed notes, verifier keys and checkpoints against the vectors of Go's ``sumdb/note`` tests.

The key, text and signatures are copied from golang.org/x/mod ``sumdb/note/note_test.go``
(TestSign, TestOpen, TestNewVerifier): Ed25519 is deterministic, so our note must equal Go's byte
for byte, and Go's notes must verify with our code.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.tlog.note import Checkpoint, NoteError, Signer, open_checkpoint, open_note, parse_vkey, split_note

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_PETER_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6Ryy"
                "BwJnAM=\n")
GO_ENOCH_SIG = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1Rv"
                "Mc+QQ=\n")


def go_signer() -> Signer:
    """Go's ``PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)`` decoded by hand."""
    _, _, name, _, key64 = GO_SKEY.split("+", 4)
    raw = base64.b64decode(key64)
    assert raw[0] == 1
    return Signer(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_our_signed_note_is_byte_for_byte_gos() -> None:
    assert go_signer().sign(GO_TEXT) == GO_TEXT + "\n" + GO_PETER_SIG


def test_our_vkey_is_gos() -> None:
    assert go_signer().verifier.vkey == GO_VKEY
    assert parse_vkey(GO_VKEY).key_hash == 0xC74F20A3


def test_gos_notes_open_with_our_verifier() -> None:
    peter, enoch = parse_vkey(GO_VKEY), parse_vkey(ENOCH_VKEY)
    both = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert open_note(both, peter) == GO_TEXT
    assert open_note(both, enoch) == GO_TEXT
    assert open_note(GO_TEXT + "\n" + GO_PETER_SIG, peter) == GO_TEXT
    with pytest.raises(NoteError, match="not signed by EnochRoot"):
        open_note(GO_TEXT + "\n" + GO_PETER_SIG, enoch)


@pytest.mark.parametrize("note", [
    GO_TEXT.replace("answer", "ANSWER") + "\n" + GO_PETER_SIG,  # text changed
    GO_TEXT + "\n" + GO_PETER_SIG.replace("x08go", "x08gp"),  # signature changed (same key hash)
    GO_TEXT + GO_PETER_SIG,  # no blank line
    GO_TEXT + "\n" + GO_PETER_SIG[:-1],  # no final newline
    GO_TEXT + "\n" + GO_PETER_SIG.replace("— ", "- "),  # ASCII dash
    GO_TEXT + "\n",  # no signature
    GO_TEXT.replace("\n", "\r\n", 1) + "\n" + GO_PETER_SIG,  # control character
    GO_TEXT + "\n" + "— PeterNeumann x08g\n",  # signature too short
])
def test_mangled_notes_are_refused(note: str) -> None:
    with pytest.raises(NoteError):
        open_note(note, parse_vkey(GO_VKEY))


def test_mangled_vkeys_are_refused_like_go() -> None:
    """Go's TestNewVerifier: every proper substring and every byte incremented is refused."""
    b = GO_VKEY.encode()
    bad = [b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))]
    bad += [b[:i] + bytes([b[i] + 1]) + b[i + 1:] for i in range(len(b))]
    accepted = []
    for k in bad:
        try:
            parse_vkey(k.decode("latin-1"))
            accepted.append(k)
        except NoteError:
            pass
    assert accepted == []
    for vkey in ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                 "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"):
        with pytest.raises(NoteError):
            parse_vkey(vkey)


def test_split_keeps_unknown_signatures() -> None:
    text, sigs = split_note(GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG)
    assert text == GO_TEXT
    assert [(s.name, s.key_hash) for s in sigs] == [("PeterNeumann", 0xC74F20A3), ("EnochRoot", 0xAF0CFE78)]


ROOT = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


def test_checkpoint_text_is_the_c2sp_layout() -> None:
    cp = Checkpoint("example.com/log", 8, ROOT)
    assert cp.text() == "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    assert Checkpoint.parse(cp.text()) == cp


def test_signed_checkpoint_round_trip_and_origin_check() -> None:
    signer = Signer("example.com/log", Ed25519PrivateKey.generate())
    note = Checkpoint("example.com/log", 8, ROOT).sign(signer)
    assert note.startswith("example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n— example.com/log ")
    assert open_checkpoint(note, signer.verifier) == Checkpoint("example.com/log", 8, ROOT)
    other = Checkpoint("other.example/log", 8, ROOT).sign(signer)
    with pytest.raises(NoteError, match=r"expected .example\.com/log."):
        open_checkpoint(other, signer.verifier)
    with pytest.raises(NoteError, match="not signed"):
        open_checkpoint(note, Signer("example.com/log", Ed25519PrivateKey.generate()).verifier)


@pytest.mark.parametrize("text", [
    "log\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",  # leading zero
    "log\n-1\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
    "log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQ==\n",  # short hash
    "log\n8\n",
    "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
    "log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
    "log\n\uff18\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",  # a full-width digit
])
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)
