"""What the staff services need from other capabilities, as protocols.

The audit log (:mod:`tongbao.audit`) and the key ring
(:mod:`tongbao.security.keyring`) are wired in by the platform; the staff
services only know these signatures.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Connection


class AuditTrail(Protocol):
    def record(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: str = "ok",
        source_ip: str | None = None,
        before: Any = None,
        after: Any = None,
        details: Any = None,
    ) -> Any: ...


class SecretCipher(Protocol):
    """Field encryption under a subject's data key (SEC-1)."""

    def encrypt(
        self, conn: Connection, *, subject: str, record_class: str, field: str, plaintext: str
    ) -> str: ...

    def decrypt(
        self, conn: Connection, ciphertext: str, *, field: str, subject: str | None = None
    ) -> str: ...

