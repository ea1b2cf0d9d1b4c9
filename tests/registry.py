"""Environments registered in the test's run store, as an admin registers them with
`golive env set` (the command itself is tested in a subprocess: tests/golive/test_registry.py)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from golive.registry import Environment, Rules, set_environment
from golive.signing import public_key_text

ADMIN = Ed25519PrivateKey.generate()


def public(key: Ed25519PrivateKey) -> str:
    return public_key_text(key.public_key())


def register(
    environment: str,
    production: bool = False,
    approvers: dict[str, Any] | None = None,
    **rules: Any,
) -> Environment:
    """`approvers` maps each name to a private key (registered by its public half), to None
    (a person without a key) or to an entry as a rules file has it."""
    people = {name: _approver(who) for name, who in (approvers or {}).items()}
    full = {"production": production, "admins": {"admin": public(ADMIN)}, "approvers": people}
    return set_environment(environment, Rules.model_validate(full | rules), ADMIN)


def _approver(who: Any) -> dict[str, Any]:
    if isinstance(who, Ed25519PrivateKey):
        return {"public_key": public(who)}
    return dict(who or {})
