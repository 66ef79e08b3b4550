"""Who is calling: principals and the tokens that prove it. Pure."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

TOKEN_PREFIX = "tbk_"  # noqa: S105 - a public prefix, not a secret
SESSION_PREFIX = "tbs_"  # staff sessions: a login, not an API token


class PrincipalType(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    SYSTEM = "system"
    """The local command line and background duties: whoever runs them owns the database."""


@dataclass(frozen=True, slots=True)
class Principal:
    type: PrincipalType
    id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)
    """What the roles allow (:func:`tongbao.auth.permissions.permissions_for`)."""

    @property
    def actor(self) -> str:
        """How audit records and payment events name this principal."""
        return f"{self.type}:{self.id}"


def new_token() -> str:
    """A fresh bearer token: prefix + 192 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def new_session_token() -> str:
    """A fresh staff session token: prefix + 256 random bits."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are stored only as SHA-256: they are random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()
