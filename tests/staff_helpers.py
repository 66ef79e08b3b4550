"""Staff members of the tests' own: created, enrolled (password + TOTP) and
given roles the way the local command line bootstraps them, and signed in
with a code computed from the test clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyotp
from sqlalchemy import Connection

from tongbao.auth import Principal, PrincipalType, StaffMember
from tongbao.platform import Platform

PASSWORD = "Staff-Passw0rd-2026"
# What the local command line acts as: it may assign roles without dual control.
SYSTEM = Principal(PrincipalType.SYSTEM, "tests")


@dataclass(frozen=True)
class StaffLogin:
    member: StaffMember
    password: str
    totp_secret: str

    @property
    def id(self) -> str:
        return self.member.id

    @property
    def username(self) -> str:
        return self.member.username


def new_staff(
    platform: Platform,
    roles: Iterable[str] = (),
    *,
    username: str | None = None,
    must_change_password: bool = False,
) -> StaffLogin:
    name = username or f"staff-{uuid.uuid4().hex[:10]}"

    def create(conn: Connection) -> StaffLogin:
        member = platform.staff.create(conn, SYSTEM, username=name, display_name=f"测试 {name}")
        enrolment = platform.staff.issue_credentials(
            conn, SYSTEM, member.id, password=PASSWORD, must_change=must_change_password
        )
        for role in roles:
            platform.staff.assign_role(conn, SYSTEM, member.id, role)
        return StaffLogin(platform.staff.get(conn, member.id), PASSWORD, enrolment.totp_secret)

    return platform.db.run(create)


def totp(platform: Platform, who: StaffLogin) -> str:
    """The code the member's authenticator shows at the test clock's time."""
    return pyotp.TOTP(who.totp_secret).at(platform.clock.now())


def login(platform: Platform, who: StaffLogin, *, password: str | None = None) -> str:
    """Sign in; returns the session token."""
    session = platform.staff.login(
        platform.db,
        username=who.username,
        password=password or who.password,
        code=totp(platform, who),
    )
    return session.token


def staff_session(platform: Platform, roles: Iterable[str] = ()) -> str:
    """A fresh staff member holding ``roles``, signed in: their session token."""
    return login(platform, new_staff(platform, roles))


def principal(platform: Platform, token: str) -> Principal:
    return platform.db.run(lambda conn: platform.staff.authenticate_session(conn, token))
