"""An operator accounts file changed outside the agent, found and recorded before anything is signed.

The agent remembers, in the state saved with every commit, the digest of the accounts last
recorded in the chain (``accounts_sha256`` of ``operator.added``, ``operator.unlocked`` or
``operator.accounts``). At start, before every signature and before every account change it
compares the file with it; a difference is recorded as ``operator.accounts`` (the accounts as
they are now, with a fingerprint of each credential) and raises a high-priority alarm. What was
signed is then signed under a recorded state, and the store checks that every signature's digest
is one the chain recorded (:mod:`blackbox.store.batch_record`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from blackbox.agent.esign import Accounts
from blackbox.model import Context, EventDraft

ACCOUNT_EVENTS = ("operator.added", "operator.unlocked", "operator.accounts")
"""Events that carry the digest of the accounts after them (``accounts_sha256``)."""


def accounts_events(accounts: Accounts, chained: str | None, reason: str) -> list[EventDraft]:
    """What to record if the accounts file is not the one last recorded (``chained``): nothing if it is.

    Raises :class:`blackbox.agent.control.ControlError` if the file cannot be read.
    """
    digest, users = accounts.state()
    if digest == chained or (chained is None and not users):
        return []
    outside = chained is not None
    data: dict[str, Any] = {"accounts_sha256": digest, "previous_sha256": chained, "changed_outside": outside,
                            "reason": reason if outside else "first record of the operator accounts", "users": users}
    out = [EventDraft("operator.accounts", "accounts", data, context=Context())]
    if outside:
        out.append(EventDraft("alarm.raised", "accounts", {
            "rule": "accounts_file", "tag": str(accounts.path), "level": "changed", "priority": "high",
            "value": digest[:16], "limit": (chained or "")[:16],
            "message": f"the operator accounts file {accounts.path} was changed outside blackbox operator "
                       f"commands ({reason}); the accounts as they are now are recorded"}, context=Context()))
    return out


async def record_outside_change(accounts: Accounts, chained: Callable[[], str | None],
                                run: Callable[[Callable[[Any], list[EventDraft]]], Awaitable[Any]],
                                reason: str) -> None:
    """Record the accounts file if it differs from the last recorded state (call with ``accounts.lock`` held)."""
    found = accounts_events(accounts, chained(), reason)
    if found:
        await run(lambda t: found)
