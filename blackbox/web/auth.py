"""Who may see what: API tokens, users with passwords, login sessions, and the per-site rule.

* **Tokens** are ``bbx_<token id>_<secret>``: the id is public (lists, the access log), the secret
  (32 random bytes) is shown once and only its SHA-256 is stored — a secret of 256 random bits
  needs no slow hash, and a stolen table gives nothing to replay.
* **Passwords** are hashed with argon2id (argon2-cffi's defaults: memory-hard).
* **Sessions** are random cookie values, stored as SHA-256, each with its own CSRF token that
  every form of the session must carry.
* **Roles**: ``regulator`` (every site, or a listed set), ``factory_qa`` (exactly one site),
  ``admin`` (gateways, keys, tokens; no batch data).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, insert, select, update

from blackbox.model import now_us
from blackbox.store.schema import api_tokens, web_sessions, web_users

Role = Literal["regulator", "factory_qa", "admin"]
ROLES: tuple[Role, ...] = ("regulator", "factory_qa", "admin")
TOKEN_PREFIX = "bbx_"

_hasher = PasswordHasher()


class AuthError(ValueError):
    """A principal cannot be created as asked (unknown role, factory QA without one site, ...)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user (pages) or a token (API)."""

    label: str
    """``user:<name>`` or ``token:<id> (<name>)``, as written in the access log."""
    role: Role
    sites: frozenset[str] | None
    """Sites this principal may see; None: every site."""
    user_id: int | None = None
    csrf: str | None = None
    """The session's CSRF token (users logged in through the pages)."""

    def may_see_batches(self) -> bool:
        return self.role in ("regulator", "factory_qa")

    def may_see_site(self, site: str) -> bool:
        return self.may_see_batches() and (self.sites is None or site in self.sites)

    def site_filter(self) -> list[str] | None:
        """Sites to restrict queries to; None: no restriction."""
        return None if self.sites is None else sorted(self.sites)


def check_role(role: str, sites: list[str] | None) -> tuple[Role, list[str] | None]:
    """Validate a role and its sites; factory QA needs exactly one site, admin none."""
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    sites = sorted(set(sites)) if sites else None
    if role == "factory_qa" and (sites is None or len(sites) != 1):
        raise AuthError("a factory_qa principal belongs to exactly one site (--site)")
    if role == "admin" and sites:
        raise AuthError("an admin sees no batch data: give no --site")
    return role, sites


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sites(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(str(s) for s in value)


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    name: str
    role: str
    sites: list[str] | None
    created_at_us: int
    expires_at_us: int | None
    revoked_at_us: int | None


def create_token(engine: Engine, name: str, role: str, sites: list[str] | None = None,
                 expires_at_us: int | None = None) -> str:
    """Store a new token and return it in full: the only time its secret exists outside the caller."""
    role, sites = check_role(role, sites)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(api_tokens).values(
            token_id=token_id, secret_sha256=_sha256(secret), name=name, role=role, sites=sites,
            created_at_us=now_us(), expires_at_us=expires_at_us))
    return f"{TOKEN_PREFIX}{token_id}_{secret}"


def list_tokens(engine: Engine) -> list[TokenInfo]:
    t = api_tokens.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.token_id, t.name, t.role, t.sites, t.created_at_us, t.expires_at_us,
                                   t.revoked_at_us).order_by(t.created_at_us, t.id)).all()
    return [TokenInfo(r.token_id, r.name, r.role, r.sites, r.created_at_us, r.expires_at_us, r.revoked_at_us)
            for r in rows]


def revoke_token(engine: Engine, token_id: str) -> bool:
    """Revoke a token by its public id; False if there is no such token or it was already revoked."""
    t = api_tokens.c
    with engine.begin() as conn:
        res = conn.execute(update(api_tokens).where(t.token_id == token_id, t.revoked_at_us.is_(None))
                           .values(revoked_at_us=now_us()))
    return res.rowcount == 1


def token_principal(engine: Engine, token: str) -> Principal | None:
    """The principal of a presented token, or None if it is malformed, unknown, revoked or expired."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not sep or not token_id or not secret:
        return None
    t = api_tokens.c
    with engine.connect() as conn:
        row = conn.execute(select(api_tokens).where(t.token_id == token_id)).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
        return None
    now = now_us()
    if row.revoked_at_us is not None or (row.expires_at_us is not None and row.expires_at_us <= now):
        return None
    return Principal(f"token:{row.token_id} ({row.name})", row.role, _sites(row.sites))


# -- users and sessions ------------------------------------------------------------------------


def create_user(engine: Engine, username: str, password: str, role: str, sites: list[str] | None = None) -> None:
    role, sites = check_role(role, sites)
    if len(password) < 10:
        raise AuthError("a password has at least 10 characters")
    with engine.begin() as conn:
        if conn.execute(select(web_users.c.id).where(web_users.c.username == username)).first() is not None:
            raise AuthError(f"user {username!r} already exists")
        conn.execute(insert(web_users).values(username=username, password_hash=_hasher.hash(password), role=role,
                                              sites=sites, created_at_us=now_us()))


def disable_user(engine: Engine, username: str) -> bool:
    u = web_users.c
    with engine.begin() as conn:
        res = conn.execute(update(web_users).where(u.username == username, u.disabled_at_us.is_(None))
                           .values(disabled_at_us=now_us()))
    return res.rowcount == 1


def check_password(engine: Engine, username: str, password: str) -> int | None:
    """The user's id if the password is right and the user enabled, else None (same cost either way)."""
    u = web_users.c
    with engine.connect() as conn:
        row = conn.execute(select(u.id, u.password_hash, u.disabled_at_us).where(u.username == username)).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        ok: bool = _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or row.disabled_at_us is not None:
        return None
    return int(row.id)


_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))  # verified against for unknown users: no timing oracle


def open_session(engine: Engine, user_id: int, lifetime_us: int) -> str:
    """Start a session; returns the cookie value (stored only as its hash)."""
    value = secrets.token_urlsafe(32)
    now = now_us()
    with engine.begin() as conn:
        conn.execute(insert(web_sessions).values(session_sha256=_sha256(value), user_id=user_id,
                                                 csrf=secrets.token_urlsafe(24), created_at_us=now,
                                                 expires_at_us=now + lifetime_us))
    return value


def close_session(engine: Engine, value: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(web_sessions).where(web_sessions.c.session_sha256 == _sha256(value))
                     .values(expires_at_us=0))


def session_principal(engine: Engine, value: str) -> Principal | None:
    s, u = web_sessions.c, web_users.c
    with engine.connect() as conn:
        row = conn.execute(
            select(u.id, u.username, u.role, u.sites, u.disabled_at_us, s.csrf, s.expires_at_us)
            .join_from(web_sessions, web_users, s.user_id == u.id)
            .where(s.session_sha256 == _sha256(value))
        ).first()
    if row is None or row.expires_at_us <= now_us() or row.disabled_at_us is not None:
        return None
    return Principal(f"user:{row.username}", row.role, _sites(row.sites), user_id=row.id, csrf=row.csrf)
