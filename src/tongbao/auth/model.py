"""Who is calling: principals and the tokens that prove it. Pure."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

TOKEN_PREFIX = "tbk_"  # noqa: S105 - a public prefix, not a secret


class PrincipalType(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class Principal:
    type: PrincipalType
    id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        """How audit records and payment events name this principal."""
        return f"{self.type}:{self.id}"


def new_token() -> str:
    """A fresh bearer token: prefix + 192 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """Tokens are stored only as SHA-256: they are random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()
