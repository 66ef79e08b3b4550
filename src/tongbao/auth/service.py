"""Who is calling: customers by API token, staff by session (see :mod:`.staff`).

Staff API tokens from before staff logins existed no longer authenticate:
staff sign in with password and TOTP code (SEC-13).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from tongbao import errors
from tongbao.auth import tables as t
from tongbao.auth.model import SESSION_PREFIX, Principal, PrincipalType, new_token, token_hash
from tongbao.auth.staff import StaffService
from tongbao.clock import Clock
from tongbao.storage.prepared import Prepared

_TOKEN = Prepared(select(t.api_tokens).where(t.api_tokens.c.token_hash == bindparam("p_hash")))


class Auth:
    def __init__(self, clock: Clock, staff: StaffService) -> None:
        self.clock = clock
        self.staff = staff

    def issue_token(
        self,
        conn: Connection,
        principal_type: PrincipalType,
        principal_id: str,
        *,
        label: str,
        token: str | None = None,
        expires_at: datetime | None = None,
    ) -> str:
        """Store a token for a principal and return it; it is never shown again.

        ``token`` lets demo data use well-known tokens; production never passes it.
        """
        token = token or new_token()
        conn.execute(
            insert(t.api_tokens),
            {
                "token_hash": token_hash(token),
                "principal_type": principal_type.value,
                "principal_id": principal_id,
                "label": label,
                "created_at": self.clock.now(),
                "expires_at": expires_at,
            },
        )
        return token

    def authenticate(self, conn: Connection, token: str | None) -> Principal:
        """The principal a bearer token stands for, or :class:`errors.Unauthenticated`."""
        if not token:
            raise errors.Unauthenticated("send 'Authorization: Bearer <token>'")
        if token.startswith(SESSION_PREFIX):
            return self.staff.authenticate_session(conn, token)
        row = _TOKEN.first(conn, {"p_hash": token_hash(token)})
        now = self.clock.now()
        if row is None or row["revoked_at"] is not None:
            raise errors.Unauthenticated("the token is unknown or revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise errors.Unauthenticated("the token has expired")
        principal_type = PrincipalType(row["principal_type"])
        if principal_type is not PrincipalType.CUSTOMER:
            raise errors.Unauthenticated(
                "staff sign in with username, password and code (POST /v1/staff/login)"
            )
        return Principal(principal_type, row["principal_id"])

    def revoke_tokens(
        self, conn: Connection, principal_type: PrincipalType, principal_id: str
    ) -> int:
        result = conn.execute(
            update(t.api_tokens)
            .where(
                t.api_tokens.c.principal_type == principal_type.value,
                t.api_tokens.c.principal_id == principal_id,
                t.api_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=self.clock.now())
        )
        return result.rowcount

    def staff_by_username(self, conn: Connection, username: str) -> str | None:
        member = self.staff.find(conn, username)
        return None if member is None else member.id
