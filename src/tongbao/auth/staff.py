"""Staff accounts: credentials, login, sessions, roles, offboarding, permission review.

Rules (pure) live in :mod:`.credentials`, :mod:`.permissions` and
:mod:`.behaviour`; this module loads and stores.

* Login is username + password + TOTP code (SEC-13); wrong attempts lock the
  login (AUTH-3); a password older than its maximum age must be changed
  before anything else (AUTH-6). A failed login is *committed* (the failure
  count, the security event, the audit record) before the refusal is raised.
* Where each attempt on an existing account came from is remembered, and an
  unusual place raises an alert (SEC-9, :meth:`BehaviourMonitor.login_from`).
* A session token is random and stored only as its SHA-256; it ends after
  ``staff_session_minutes`` idle, after :data:`SESSION_ABSOLUTE`, at logout
  and when its owner is offboarded.
* Roles are granted through dual control (:mod:`.dual_control_service`),
  revoked at once. :meth:`StaffService.assign_role` itself is also what the
  local command line uses to bootstrap the first administrator.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from tongbao import errors
from tongbao.audit import AuditLog
from tongbao.auth import tables as t
from tongbao.auth.behaviour import EventKind
from tongbao.auth.credentials import (
    SESSION_ABSOLUTE,
    SESSION_TOUCH_EVERY,
    after_failure,
    check_password,
    hash_password,
    is_locked,
    match_totp,
    new_totp_secret,
    password_expired,
    provisioning_uri,
    session_alive,
    verify_password,
)
from tongbao.auth.model import (
    SESSION_PREFIX,
    Principal,
    PrincipalType,
    new_session_token,
    token_hash,
)
from tongbao.auth.monitor import BehaviourMonitor
from tongbao.auth.permissions import check_roles, conflicts, parse_role, permissions_for
from tongbao.clock import Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.security import KeyRing
from tongbao.security.geoip import IpLocation
from tongbao.storage import Database

TOTP_FIELD = "staff.totp_secret"
USERNAME = re.compile(r"[a-z][a-z0-9._-]{2,59}")


@dataclass(frozen=True, slots=True)
class StaffMember:
    id: str
    username: str
    display_name: str
    status: str  # active | left
    roles: frozenset[str]
    created_at: datetime
    last_login_at: datetime | None
    locked_until: datetime | None
    password_changed_at: datetime | None
    left_at: datetime | None
    enrolled: bool  # has a password and a TOTP secret

    @property
    def principal(self) -> Principal:
        return Principal(PrincipalType.STAFF, self.id, self.roles, permissions_for(self.roles))


@dataclass(frozen=True, slots=True)
class RoleGrant:
    staff_id: str
    role: str
    granted_at: datetime
    granted_by: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """Shown once: the temporary password and the TOTP secret are never stored in clear."""

    staff_id: str
    username: str
    password: str | None
    totp_secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    staff_id: str
    expires_at: datetime  # the absolute end; idle time ends it sooner
    idle_minutes: int
    password_expired: bool


@dataclass(frozen=True, slots=True)
class Offboarding:
    staff_id: str
    roles_revoked: list[str]
    sessions_ended: int
    tokens_revoked: int
    requests_cancelled: int


@dataclass(frozen=True, slots=True)
class ReviewLine:
    """One staff member in the quarterly permission review (SEC-7)."""

    staff_id: str
    username: str
    display_name: str
    status: str
    roles: list[RoleGrant]
    permissions: list[str]
    last_login_at: datetime | None
    flags: list[str]


def require(principal: Principal, permission: str) -> None:
    """:class:`errors.PermissionDenied` unless ``principal`` holds ``permission``."""
    if principal.type is PrincipalType.SYSTEM:
        return
    if principal.type is not PrincipalType.STAFF or permission not in principal.permissions:
        raise errors.PermissionDenied(f"needs the permission {permission}")


def review_flags(member: StaffMember, now: datetime, *, dormant_after: timedelta) -> list[str]:
    """SEC-7 review flags for one member. Pure."""
    flags = []
    if member.status == "left" and member.roles:
        flags.append("left_with_roles")
    if member.status == "active":
        seen = member.last_login_at or member.created_at
        if now - seen > dormant_after:
            flags.append("dormant")
    if conflicts(member.roles):
        flags.append("conflicting_roles")
    return flags


class StaffService:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        audit: AuditLog,
        cipher: KeyRing,
        monitor: BehaviourMonitor,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.audit = audit
        self.cipher = cipher
        self.monitor = monitor

    # ------------------------------------------------------------------ accounts

    def create(
        self, conn: Connection, actor: Principal, *, username: str, display_name: str
    ) -> StaffMember:
        """A new staff member without roles or credentials (see :meth:`issue_credentials`)."""
        require(actor, "staff.manage")
        if not USERNAME.fullmatch(username):
            raise errors.ValidationFailed(
                "a username is 3 to 60 characters: lower-case letters, digits, '.', '_', '-', "
                "starting with a letter"
            )
        display_name = display_name.strip()
        if not 0 < len(display_name) <= 100:
            raise errors.ValidationFailed("display_name is 1 to 100 characters")
        if self.find(conn, username) is not None:
            raise errors.StaffExists(f"the username {username!r} is taken")
        staff_id = new_id("staff")
        now = self.clock.now()
        conn.execute(
            insert(t.staff_members),
            {
                "id": staff_id,
                "username": username,
                "display_name": display_name,
                "status": "active",
                "failed_logins": 0,
                "created_at": now,
            },
        )
        self.audit.record(
            conn,
            actor=actor.actor,
            action="staff.create",
            target=f"staff:{staff_id}",
            after={"username": username, "display_name": display_name},
        )
        return self.get(conn, staff_id)

    def issue_credentials(
        self,
        conn: Connection,
        actor: Principal,
        staff_id: str,
        *,
        password: str | None = None,
        must_change: bool = True,
        totp_secret: str | None = None,
    ) -> Enrolment:
        """Set a password (a random temporary one unless given) and a new TOTP
        secret; unlock the login and end every session. Returns both once.

        ``totp_secret`` lets demo data use a well-known secret; production never passes it.
        """
        require(actor, "staff.manage")
        member = self.get(conn, staff_id, for_update=True)
        self._active(member)
        generated = password is None
        password = password or _temporary_password()
        if not generated:
            check_password(
                password,
                min_length=self.settings.staff_password_min_length,
                username=member.username,
            )
        secret = totp_secret or new_totp_secret()
        sealed = self.cipher.encrypt(
            conn,
            subject=f"staff:{staff_id}",
            record_class="staff",
            field=TOTP_FIELD,
            plaintext=secret,
        )
        now = self.clock.now()
        conn.execute(
            update(t.staff_members)
            .where(t.staff_members.c.id == staff_id)
            .values(
                password_hash=hash_password(password),
                password_changed_at=None if must_change else now,
                totp_secret=sealed,
                totp_last_step=None,
                failed_logins=0,
                locked_until=None,
            )
        )
        self._end_sessions(conn, staff_id)
        self.audit.record(
            conn,
            actor=actor.actor,
            action="staff.credentials_issued",
            target=f"staff:{staff_id}",
            details={"must_change_password": must_change},
        )
        return Enrolment(
            staff_id=staff_id,
            username=member.username,
            password=password if generated else None,
            totp_secret=secret,
            otpauth_uri=provisioning_uri(
                secret, username=member.username, issuer=self.settings.totp_issuer
            ),
        )

    def unlock(self, conn: Connection, actor: Principal, staff_id: str) -> StaffMember:
        """AUTH-3: an administrator lifts a login lock after checking who asks."""
        require(actor, "staff.manage")
        member = self.get(conn, staff_id, for_update=True)
        self._active(member)
        conn.execute(
            update(t.staff_members)
            .where(t.staff_members.c.id == staff_id)
            .values(failed_logins=0, locked_until=None)
        )
        self.audit.record(
            conn, actor=actor.actor, action="staff.unlock", target=f"staff:{staff_id}"
        )
        return self.get(conn, staff_id)

    def get(self, conn: Connection, staff_id: str, *, for_update: bool = False) -> StaffMember:
        query = select(t.staff_members).where(t.staff_members.c.id == staff_id)
        row = conn.execute(query.with_for_update() if for_update else query).first()
        if row is None:
            raise errors.StaffNotFound(f"no staff member {staff_id}")
        return self._member(conn, row._mapping)

    def find(self, conn: Connection, username: str) -> StaffMember | None:
        row = conn.execute(
            select(t.staff_members).where(t.staff_members.c.username == username)
        ).first()
        return None if row is None else self._member(conn, row._mapping)

    def members(self, conn: Connection) -> list[StaffMember]:
        return [member for member, _ in self._members_with_grants(conn)]

    def roles(self, conn: Connection, staff_id: str) -> list[RoleGrant]:
        r = t.staff_roles
        rows = conn.execute(select(r).where(r.c.staff_id == staff_id).order_by(r.c.role))
        return [_grant(row._mapping) for row in rows]

    # ------------------------------------------------------------------ roles

    def check_grant(self, conn: Connection, staff_id: str, role: str) -> StaffMember:
        """Refuse a grant that cannot be made: unknown role, inactive member,
        held already, or conflicting with a role held (SEC-5)."""
        parse_role(role)
        return self._grantable(self.get(conn, staff_id), role)

    def assign_role(
        self,
        conn: Connection,
        actor: Principal,
        staff_id: str,
        role: str,
        *,
        request_id: str | None = None,
    ) -> RoleGrant:
        """Grant ``role``. Called by an approved ``roles.grant`` request or, to
        bootstrap, by the local command line (a system principal)."""
        if actor.type is not PrincipalType.SYSTEM and request_id is None:
            raise errors.PermissionDenied("roles are granted through a dual-control request")
        member = self.get(conn, staff_id, for_update=True)
        parse_role(role)
        self._grantable(member, role)
        grant = RoleGrant(staff_id, role, self.clock.now(), actor.actor, request_id)
        conn.execute(
            insert(t.staff_roles),
            {
                "staff_id": staff_id,
                "role": role,
                "granted_at": grant.granted_at,
                "granted_by": grant.granted_by,
                "request_id": request_id,
            },
        )
        self.audit.record(
            conn,
            actor=actor.actor,
            action="staff.role_granted",
            target=f"staff:{staff_id}",
            after={"role": role},
            details={"request_id": request_id} if request_id else None,
        )
        return grant

    def revoke_role(self, conn: Connection, actor: Principal, staff_id: str, role: str) -> None:
        """Revoke at once (no dual control: taking rights away is always safe)."""
        require(actor, "staff.manage")
        parse_role(role)
        member = self.get(conn, staff_id, for_update=True)
        if role not in member.roles:
            raise errors.NotFound(f"{member.username} does not hold {role}")
        r = t.staff_roles
        conn.execute(delete(r).where(r.c.staff_id == staff_id, r.c.role == role))
        self.audit.record(
            conn,
            actor=actor.actor,
            action="staff.role_revoked",
            target=f"staff:{staff_id}",
            before={"role": role},
        )

    # ------------------------------------------------------------------ login

    def login(
        self,
        db: Database,
        *,
        username: str,
        password: str,
        code: str,
        source_ip: str | None = None,
    ) -> Session:
        """Username + password + TOTP code → a session (SEC-13, AUTH-3, AUTH-6).

        The slow password check runs outside the write transaction; the
        transaction then re-checks the lock and the TOTP step on the locked
        row, so two logins racing with one code cannot both succeed. The place
        of ``source_ip`` (SEC-9) is also looked up once, before the transaction
        and whatever the username (an unusable geolocation file refuses every
        login alike); its row is written with the login's outcome.
        """
        stored = db.read(lambda conn: _password_hash(conn, username))
        password_ok = verify_password(stored, password)
        here = self.monitor.locator.locate(source_ip)

        def attempt(conn: Connection) -> Session | errors.TongbaoError:
            return self._login(conn, username, stored, password_ok, code, source_ip, here)

        outcome = db.run(attempt)
        if isinstance(outcome, errors.TongbaoError):
            raise outcome
        return outcome

    def _login(
        self,
        conn: Connection,
        username: str,
        checked_hash: str | None,
        password_ok: bool,
        code: str,
        source_ip: str | None,
        here: IpLocation,
    ) -> Session | errors.TongbaoError:
        now = self.clock.now()
        row = conn.execute(
            select(t.staff_members).where(t.staff_members.c.username == username).with_for_update()
        ).first()
        refused = errors.InvalidCredentials("the username, password or code is wrong")
        if row is None or row.status != "active" or row.password_hash is None:
            self.audit.record(
                conn,
                actor=f"anonymous:{_printable(username)}",
                action="staff.login",
                target=f"staff:{row.id}" if row is not None else "staff:unknown",
                outcome="refused",
                source_ip=source_ip,
            )
            return refused
        target = f"staff:{row.id}"
        if is_locked(row.locked_until, now):
            self.monitor.record(conn, row.id, EventKind.LOGIN_FAILED, "login while locked")
            self.monitor.login_from(conn, row.id, source_ip, here, succeeded=False)
            self.audit.record(
                conn,
                actor=target,
                action="staff.login",
                target=target,
                outcome="refused",
                source_ip=source_ip,
                details={"reason": "locked"},
            )
            return errors.LoginLocked(f"the login is locked until {row.locked_until.isoformat()}")
        step = None
        if password_ok and row.password_hash == checked_hash and row.totp_secret is not None:
            secret = self.cipher.decrypt(conn, row.totp_secret, field=TOTP_FIELD, subject=target)
            step = match_totp(secret, code, at=now, last_step=row.totp_last_step)
        if step is None:
            earlier = 0 if row.locked_until is not None else row.failed_logins
            failed, locked_until = after_failure(
                earlier,
                now,
                max_failures=self.settings.staff_login_max_failures,
                lockout=timedelta(minutes=self.settings.staff_lockout_minutes),
            )
            conn.execute(
                update(t.staff_members)
                .where(t.staff_members.c.id == row.id)
                .values(failed_logins=failed, locked_until=locked_until)
            )
            self.monitor.record(conn, row.id, EventKind.LOGIN_FAILED, "wrong password or code")
            self.monitor.login_from(conn, row.id, source_ip, here, succeeded=False)
            self.audit.record(
                conn,
                actor=target,
                action="staff.login",
                target=target,
                outcome="refused",
                source_ip=source_ip,
                details={"failed_logins": failed, "locked": locked_until is not None},
            )
            if locked_until is not None:
                return errors.LoginLocked(
                    f"{failed} wrong attempts: the login is locked until {locked_until.isoformat()}"
                )
            return refused
        conn.execute(
            update(t.staff_members)
            .where(t.staff_members.c.id == row.id)
            .values(failed_logins=0, locked_until=None, totp_last_step=step, last_login_at=now)
        )
        token = new_session_token()
        conn.execute(
            insert(t.staff_sessions),
            {
                "token_hash": token_hash(token),
                "staff_id": row.id,
                "created_at": now,
                "last_seen_at": now,
                "source_ip": source_ip,
            },
        )
        self.monitor.login_from(conn, row.id, source_ip, here, succeeded=True)
        expired = password_expired(
            row.password_changed_at,
            now,
            max_age=timedelta(days=self.settings.staff_password_max_age_days),
        )
        self.audit.record(
            conn,
            actor=target,
            action="staff.login",
            target=target,
            source_ip=source_ip,
            details={"password_expired": expired},
        )
        return Session(
            token=token,
            staff_id=row.id,
            expires_at=now + SESSION_ABSOLUTE,
            idle_minutes=self.settings.staff_session_minutes,
            password_expired=expired,
        )

    def authenticate_session(
        self, conn: Connection, token: str, *, allow_expired_password: bool = False
    ) -> Principal:
        """The staff member a session token stands for, refreshing its idle timer.

        Refuses (401) unknown, ended, idle or too old sessions and members who
        left; with an expired password only ``allow_expired_password`` callers
        (the change-password route) get through, others get 403 password_expired.
        """
        if not token.startswith(SESSION_PREFIX):
            raise errors.Unauthenticated("not a staff session token")
        s = t.staff_sessions
        digest = token_hash(token)
        row = conn.execute(select(s).where(s.c.token_hash == digest)).first()
        now = self.clock.now()
        idle = timedelta(minutes=self.settings.staff_session_minutes)
        if row is None or row.ended_at is not None:
            raise errors.Unauthenticated("the session is unknown or has ended; log in again")
        if not session_alive(row.created_at, row.last_seen_at, now, idle=idle):
            raise errors.Unauthenticated("the session has timed out; log in again")
        member = self.get(conn, row.staff_id)
        if member.status != "active":
            raise errors.Unauthenticated("the staff member has left")
        if now - row.last_seen_at >= SESSION_TOUCH_EVERY:
            conn.execute(update(s).where(s.c.token_hash == digest).values(last_seen_at=now))
        if not allow_expired_password and password_expired(
            member.password_changed_at,
            now,
            max_age=timedelta(days=self.settings.staff_password_max_age_days),
        ):
            raise errors.PasswordExpired(
                "the password has expired or was set by an administrator: "
                "change it with POST /v1/staff/password"
            )
        return member.principal

    def logout(self, conn: Connection, token: str) -> None:
        s = t.staff_sessions
        digest = token_hash(token)
        row = conn.execute(select(s.c.staff_id).where(s.c.token_hash == digest)).first()
        conn.execute(
            update(s)
            .where(s.c.token_hash == digest, s.c.ended_at.is_(None))
            .values(ended_at=self.clock.now())
        )
        if row is not None:
            actor = f"staff:{row.staff_id}"
            self.audit.record(conn, actor=actor, action="staff.logout", target=actor)

    def change_password(
        self, db: Database, principal: Principal, *, current: str, new: str
    ) -> None:
        """AUTH-6: the owner sets a new password (checked, never the current one)."""

        def load(conn: Connection) -> tuple[StaffMember, str | None]:
            member = self.get(conn, principal.id)
            return member, _password_hash(conn, member.username)

        member, stored = db.read(load)
        if not verify_password(stored, current):

            def refuse(conn: Connection) -> None:
                self.monitor.record(
                    conn, member.id, EventKind.LOGIN_FAILED, "wrong current password"
                )
                self.audit.record(
                    conn,
                    actor=principal.actor,
                    action="staff.password_change",
                    target=principal.actor,
                    outcome="refused",
                )

            db.run(refuse)
            raise errors.InvalidCredentials("the current password is wrong")
        check_password(
            new, min_length=self.settings.staff_password_min_length, username=member.username
        )
        if new == current:
            raise errors.WeakPassword("the new password must differ from the current one")

        def change(conn: Connection) -> None:
            conn.execute(
                update(t.staff_members)
                .where(t.staff_members.c.id == member.id)
                .values(password_hash=hash_password(new), password_changed_at=self.clock.now())
            )
            self.audit.record(
                conn, actor=principal.actor, action="staff.password_change", target=principal.actor
            )

        db.run(change)

    # ------------------------------------------------------------------ offboarding

    def offboard(self, conn: Connection, actor: Principal, staff_id: str) -> Offboarding:
        """SEC-7: a leaving member loses every role, session and token at once;
        their pending dual-control requests are cancelled."""
        require(actor, "staff.offboard")
        member = self.get(conn, staff_id, for_update=True)
        if member.status == "left":
            raise errors.StaffInactive(f"{member.username} has already left")
        now = self.clock.now()
        r = t.staff_roles
        conn.execute(delete(r).where(r.c.staff_id == staff_id))
        sessions = self._end_sessions(conn, staff_id)
        tokens = conn.execute(
            update(t.api_tokens)
            .where(
                t.api_tokens.c.principal_type == PrincipalType.STAFF.value,
                t.api_tokens.c.principal_id == staff_id,
                t.api_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        ).rowcount
        d = t.dual_control_requests
        cancelled = conn.execute(
            update(d)
            .where(d.c.requested_by == staff_id, d.c.state == "pending")
            .values(
                state="cancelled",
                decided_at=now,
                decided_by=None,
                decision_note="the requester left (SEC-7)",
            )
        ).rowcount
        conn.execute(
            update(t.staff_members)
            .where(t.staff_members.c.id == staff_id)
            .values(status="left", left_at=now, locked_until=None)
        )
        result = Offboarding(staff_id, sorted(member.roles), sessions, tokens, cancelled)
        self.audit.record(
            conn,
            actor=actor.actor,
            action="staff.offboard",
            target=f"staff:{staff_id}",
            before={"roles": sorted(member.roles), "status": member.status},
            after={"roles": [], "status": "left"},
            details={
                "sessions_ended": sessions,
                "tokens_revoked": tokens,
                "requests_cancelled": cancelled,
            },
        )
        return result

    # ------------------------------------------------------------------ review

    def review(self, conn: Connection) -> list[ReviewLine]:
        """SEC-7: every staff member with roles, since when, granted by whom,
        permissions, last login and flags."""
        now = self.clock.now()
        dormant = timedelta(days=self.settings.permission_review_days)
        return [
            ReviewLine(
                staff_id=member.id,
                username=member.username,
                display_name=member.display_name,
                status=member.status,
                roles=held,
                permissions=sorted(permissions_for(member.roles)),
                last_login_at=member.last_login_at,
                flags=review_flags(member, now, dormant_after=dormant),
            )
            for member, held in self._members_with_grants(conn)
        ]

    # ------------------------------------------------------------------ refusals

    def record_refusal(
        self,
        db: Database,
        principal: Principal,
        *,
        action: str,
        target: str,
        error: errors.TongbaoError,
        source_ip: str | None = None,
    ) -> None:
        """A refused staff action, in a short transaction of its own (the
        action's own transaction rolled back): audit record and SEC-8 event."""

        def write(conn: Connection) -> None:
            self.audit.record(
                conn,
                actor=principal.actor,
                action=action,
                target=target[:200],
                outcome="refused",
                source_ip=source_ip,
                details={"code": error.code, "detail": error.detail[:300]},
            )
            if principal.type is PrincipalType.STAFF and error.status in (403, 409):
                self.monitor.record(
                    conn, principal.id, EventKind.REFUSED, f"{action}: {error.code}"
                )

        db.run(write)

    def permission_used(self, db: Database, principal: Principal, permission: str) -> None:
        if principal.type is PrincipalType.STAFF:
            db.run(lambda conn: self.monitor.permission_used(conn, principal.id, permission))

    # ------------------------------------------------------------------ helpers

    def _active(self, member: StaffMember) -> None:
        if member.status != "active":
            raise errors.StaffInactive(f"{member.username} has left")

    def _grantable(self, member: StaffMember, role: str) -> StaffMember:
        """The member, if they are active, lack ``role`` and it conflicts with none they hold."""
        self._active(member)
        if role in member.roles:
            raise errors.RoleConflict(f"{member.username} already holds {role}")
        check_roles({*member.roles, role})
        return member

    def _end_sessions(self, conn: Connection, staff_id: str) -> int:
        s = t.staff_sessions
        return int(
            conn.execute(
                update(s)
                .where(s.c.staff_id == staff_id, s.c.ended_at.is_(None))
                .values(ended_at=self.clock.now())
            ).rowcount
        )

    def _member(self, conn: Connection, row: Any) -> StaffMember:
        return _member(row, self.roles(conn, row["id"]))

    def _members_with_grants(self, conn: Connection) -> list[tuple[StaffMember, list[RoleGrant]]]:
        """Every staff member by username, with their role grants (two queries in all)."""
        r = t.staff_roles
        grants: dict[str, list[RoleGrant]] = {}
        for row in conn.execute(select(r).order_by(r.c.staff_id, r.c.role)):
            grants.setdefault(row.staff_id, []).append(_grant(row._mapping))
        found = []
        for row in conn.execute(select(t.staff_members).order_by(t.staff_members.c.username)):
            held = grants.get(row.id, [])
            found.append((_member(row._mapping, held), held))
        return found


def _printable(text: str) -> str:
    """A typed-in name made safe for the audit log's actor field."""
    kept = "".join(c for c in text if c.isascii() and c.isprintable() and not c.isspace())
    return kept[:40] or "-"


def _password_hash(conn: Connection, username: str) -> str | None:
    return conn.execute(
        select(t.staff_members.c.password_hash).where(
            t.staff_members.c.username == username, t.staff_members.c.status == "active"
        )
    ).scalar_one_or_none()


def _temporary_password() -> str:
    """A random first password: 4 groups of 5 from a look-alike-free alphabet, 100+ bits."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
    groups = ("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))
    return "-".join(groups) + "-" + secrets.choice("23456789")


def _grant(r: Any) -> RoleGrant:
    return RoleGrant(r["staff_id"], r["role"], r["granted_at"], r["granted_by"], r["request_id"])


def _member(r: Any, grants: list[RoleGrant]) -> StaffMember:
    return StaffMember(
        id=r["id"],
        username=r["username"],
        display_name=r["display_name"],
        status=r["status"],
        roles=frozenset(g.role for g in grants),
        created_at=r["created_at"],
        last_login_at=r["last_login_at"],
        locked_until=r["locked_until"],
        password_changed_at=r["password_changed_at"],
        left_at=r["left_at"],
        enrolled=r["password_hash"] is not None and r["totp_secret"] is not None,
    )


def review_csv(lines: list[ReviewLine]) -> str:
    """One row per role held (a member without roles: one row, role empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["username", "display_name", "status", "role", "granted_at", "granted_by",
         "last_login_at", "flags", "permissions"]
    )  # fmt: skip
    for line in lines:
        last = line.last_login_at.isoformat() if line.last_login_at else ""
        flags, permissions = " ".join(line.flags), " ".join(line.permissions)
        common = [line.username, line.display_name, line.status]
        if not line.roles:
            writer.writerow([*common, "", "", "", last, flags, permissions])
        for g in line.roles:
            writer.writerow(
                [*common, g.role, g.granted_at.isoformat(), g.granted_by, last, flags, permissions]
            )
    return buffer.getvalue()
