"""Operator accounts and electronic signatures at the gateway (21 CFR 11.50/11.200 style).

An account has an id, a printed name and roles (:data:`ROLES`); its password is kept only as a
scrypt hash (memory-hard: 2^15 x 8 x 128 bytes = 32 MiB per attempt). After ``lockout_after``
wrong passwords in a row the account is locked until an administrator unlocks it; failures are
written to the file at once, so a restart does not reset them.

A signature is two components — the user id and the password — given with the entry it signs.
What goes into the record is :meth:`Accounts.sign`'s dict: user id, printed name, role, meaning
(performed, verified, reviewed, approved) and the gateway's time; never the password. A request
whose signature fails is refused before anything is recorded.

Signatures are required as soon as the gateway has one account; a gateway without accounts keeps
the unsigned entries (who = the name given, qualified by the OS account).

The file can be edited by the gateway's root user. So that such an edit shows, the accounts'
identity (user, name, roles, salt, hash and cost — not the failure counts or the lock) has a
digest (:meth:`Accounts.state`); every account change the agent makes is recorded with the digest
after it, every signature carries the digest it was checked against, and a file whose digest is
not the last one recorded is itself recorded (``operator.accounts``, with the accounts as they are
now) and raises an alarm before anything is signed with it (:mod:`blackbox.agent.accounts_watch`).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from blackbox.agent.control import Caller, ControlError
from blackbox.model import now_us
from blackbox.spec.canonical import canonical_sha256

ROLES = ("operator", "verifier", "qc_analyst", "qa_releaser")
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MAXMEM = 64 * 2**20
MIN_PASSWORD = 8
IDENTITY = ("name", "roles", "salt", "hash", "n", "r", "p")
"""The fields of an account its digest covers: who it is and what proves it (not failures or the lock)."""


@dataclass(frozen=True)
class Account:
    user: str
    name: str
    roles: tuple[str, ...]
    locked: bool
    failures: int


class Accounts:
    """The operator accounts of one gateway, in a JSON file (mode 0600) next to its buffer."""

    def __init__(self, path: Path, lockout_after: int = 5, log2_n: int = 15) -> None:
        self.path = path
        self.lockout_after = lockout_after
        self._params = {**_SCRYPT, "n": 2**log2_n}
        """scrypt cost of new passwords (each account keeps the cost it was hashed with)."""
        self.lock = asyncio.Lock()
        """Held while the file is changed and recorded, and while it is compared with the record: no
        signature falls between an administrator's change and its record."""

    # -- administration --------------------------------------------------------------------------

    def add(self, user: str, name: str, roles: list[str], password: str) -> Account:
        doc = self._load()
        if user in doc:
            raise ControlError(f"operator {user!r} exists already")
        bad = sorted(set(roles) - set(ROLES))
        if not roles or bad:
            refused = f" (not {', '.join(bad)})" if bad else ""
            raise ControlError(f"roles must be some of {', '.join(ROLES)}{refused}")
        if not _printable(user) or not _printable(name) or " " in user:
            raise ControlError("user id (no spaces) and printed name must be printable texts of at most 128 characters")
        if len(password) < MIN_PASSWORD:
            raise ControlError(f"the password must have at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        doc[user] = {"name": name, "roles": sorted(set(roles)), "salt": salt.hex(), **self._params,
                     "hash": _hash(password, salt, self._params).hex(), "failures": 0, "locked": False}
        self._save(doc)
        return _account(user, doc[user])

    def list(self) -> list[Account]:
        return [_account(u, a) for u, a in sorted(self._load().items())]

    def unlock(self, user: str) -> Account:
        doc = self._load()
        if user not in doc:
            raise ControlError(f"no operator {user!r}")
        doc[user].update(failures=0, locked=False)
        self._save(doc)
        return _account(user, doc[user])

    def state(self) -> tuple[str, builtins.list[dict[str, Any]]]:
        """The digest of the accounts' identity, and the accounts as the record shows them (a credential
        fingerprint instead of the hash: a changed password shows, the hash does not leave the gateway)."""
        return _state(self._load())

    @property
    def enabled(self) -> bool:
        """Whether entries must be signed: the gateway has at least one account."""
        return bool(self._load())

    # -- signing ---------------------------------------------------------------------------------

    def sign(self, credentials: Any, role: str | tuple[str, ...], meaning: str) -> dict[str, Any]:
        """The signature record of ``credentials`` (``{"user", "password"}``) for ``meaning``.

        Raises :class:`ControlError` (and records a failure against the account) if the password is
        wrong, the account is locked or lacks ``role``.
        """
        roles = (role,) if isinstance(role, str) else role
        if not isinstance(credentials, dict) or not isinstance(credentials.get("user"), str) \
                or not isinstance(credentials.get("password"), str):
            raise ControlError(f"this entry must be signed ({meaning}): give user and password")
        user, password = credentials["user"], credentials["password"]
        doc = self._load()
        entry = doc.get(user)
        if entry is None:
            _hash(password, b"0" * 16, self._params)  # the same cost whether the account exists or not
            raise ControlError("signature refused: unknown user or wrong password")
        if entry.get("locked"):
            raise ControlError(f"signature refused: account {user} is locked (an administrator must unlock it)")
        params = {k: int(entry[k]) for k in ("n", "r", "p")}
        if not hmac.compare_digest(_hash(password, bytes.fromhex(entry["salt"]), params).hex(), entry["hash"]):
            entry["failures"] = int(entry.get("failures", 0)) + 1
            entry["locked"] = entry["failures"] >= self.lockout_after
            self._save(doc)
            raise ControlError("signature refused: unknown user or wrong password"
                               + (f"; account {user} is now locked" if entry["locked"] else ""))
        if entry.get("failures"):
            entry["failures"] = 0
            self._save(doc)
        if not set(roles) & set(entry["roles"]):
            raise ControlError(f"signature refused: {user} does not have the role {' or '.join(roles)}")
        return {"user": user, "name": entry["name"], "role": next(r for r in roles if r in entry["roles"]),
                "meaning": meaning, "time_us": now_us(), "accounts_sha256": _state(doc)[0]}

    # -- file ------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise ControlError(f"the operator accounts file {self.path} is damaged: {exc}") from None
        return dict(doc.get("operators") or {})

    def _save(self, operators: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps({"operators": operators}, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def who(caller: Caller, sig: dict[str, Any] | None) -> str:
    """The ``operator`` of an entry: the signer (with the OS account of the terminal), else the caller."""
    if sig is None:
        return caller.name
    return f"{sig['name']} ({sig['user']}" + (f"; os:{caller.account})" if caller.account else ")")


def _state(doc: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    identity = {u: {k: a.get(k) for k in IDENTITY} for u, a in doc.items()}
    users = [{"user": u, "name": a.get("name"), "roles": a.get("roles"),
              "credential": canonical_sha256({"salt": a.get("salt"), "hash": a.get("hash")})[:16]}
             for u, a in sorted(doc.items())]
    return canonical_sha256(identity), users


def _hash(password: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"],
                          maxmem=_MAXMEM, dklen=32)


def _account(user: str, entry: dict[str, Any]) -> Account:
    return Account(user, entry["name"], tuple(entry["roles"]), bool(entry.get("locked")),
                   int(entry.get("failures", 0)))


def _printable(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip()) and text.isprintable() and len(text) <= 128
