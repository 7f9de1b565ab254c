"""The errors of the sealing package: one base class, so callers can catch everything at once."""

from __future__ import annotations


class SealError(Exception):
    """Base of every error raised by :mod:`blackbox.seal` (other than programming errors)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedBatch(SealError):
    """The bytes are not a well-formed batch: wrong layout, header, payload or counts.

    ``reason`` is a short human-readable explanation, suitable for the store's rejection record.
    """


class BadSignature(SealError):
    """The batch is well-formed but its signature does not verify with the given key."""


class KeyFileError(SealError):
    """A key file or key text cannot be used; the message says why and how to fix it."""


class KeyFileExists(KeyFileError):
    """Refusing to overwrite an existing key file (that would orphan every batch it signed)."""


class KeyPermissionError(KeyFileError):
    """A private key file is readable by group or others."""
