"""Staff accounts on both engines: two-factor login (SEC-13) with lockout
(AUTH-3), password age (AUTH-6), sessions, role revocation, offboarding and
the permission review (SEC-7), behaviour alerts (SEC-8), the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import Connection, insert, select

from tongbao import errors
from tongbao.audit.model import AuditQuery
from tongbao.auth import PrincipalType
from tongbao.auth import tables as t
from tongbao.clock import ManualClock
from tongbao.customers import CustomerKind
from tongbao.platform import Platform

from .staff_helpers import PASSWORD, SYSTEM, login, new_staff, principal, totp


def audit_actions(platform: Platform, target: str) -> list[tuple[str, str]]:
    """(action, outcome) of the audit records about ``target``, oldest first."""
    page = platform.db.read(
        lambda conn: platform.audit.search(conn, AuditQuery(target=target), limit=100)
    )
    return [(r.action, r.outcome) for r in reversed(page.items)]


# --- login (SEC-13, AUTH-3, AUTH-9) ----------------------------------------------------------


def test_login_needs_username_password_and_code(platform: Platform) -> None:
    """SEC-13: both factors; every wrong combination gets the same answer."""
    wang = new_staff(platform, ["reviewer"], username="wang")
    for password, code in (("wrong-Passw0rd-2026", totp(platform, wang)), (PASSWORD, "000000")):
        with pytest.raises(errors.InvalidCredentials):
            platform.staff.login(platform.db, username="wang", password=password, code=code)
    with pytest.raises(errors.InvalidCredentials):
        platform.staff.login(platform.db, username="nobody", password=PASSWORD, code="123456")
    token = login(platform, wang)
    assert token.startswith("tbs_")
    who = principal(platform, token)
    assert (who.type, who.id) == (PrincipalType.STAFF, wang.id)
    assert "payments.review" in who.permissions and "staff.manage" not in who.permissions

    # The token is stored only as its hash; the TOTP secret not in clear.
    def stored(conn: Connection) -> tuple[list[str], str]:
        hashes = list(conn.execute(select(t.staff_sessions.c.token_hash)).scalars())
        secret = conn.execute(
            select(t.staff_members.c.totp_secret).where(t.staff_members.c.id == wang.id)
        ).scalar_one()
        return hashes, secret

    hashes, secret = platform.db.read(stored)
    assert token not in hashes and wang.totp_secret not in secret
    assert [a for a in audit_actions(platform, f"staff:{wang.id}") if a[0] == "staff.login"] == [
        ("staff.login", "refused"),
        ("staff.login", "refused"),
        ("staff.login", "ok"),
    ]


def test_a_totp_code_works_only_once(platform: Platform, clock: ManualClock) -> None:
    """SEC-13: a code overheard or replayed within its 30 s window is refused."""
    li = new_staff(platform, ["operator"])
    code = totp(platform, li)
    platform.staff.login(platform.db, username=li.username, password=PASSWORD, code=code)
    clock.advance(timedelta(seconds=10))
    with pytest.raises(errors.InvalidCredentials):
        platform.staff.login(platform.db, username=li.username, password=PASSWORD, code=code)
    clock.advance(timedelta(seconds=30))
    login(platform, li)


def test_three_failures_lock_the_login_for_an_hour(platform: Platform, clock: ManualClock) -> None:
    """AUTH-3: the lock holds even for the right credentials, is committed
    although the login is refused, and an administrator can lift it."""
    zhao = new_staff(platform, ["operator"])
    for expected in (errors.InvalidCredentials, errors.InvalidCredentials, errors.LoginLocked):
        with pytest.raises(expected):
            platform.staff.login(
                platform.db, username=zhao.username, password="Wrong-Passw0rd!", code="000000"
            )
    with pytest.raises(errors.LoginLocked):
        login(platform, zhao)
    clock.advance(timedelta(minutes=59))
    with pytest.raises(errors.LoginLocked):
        login(platform, zhao)
    clock.advance(timedelta(minutes=1))
    login(platform, zhao)  # the hour is over
    # Locked again, then unlocked by an administrator.
    for _ in range(3):
        with pytest.raises(errors.TongbaoError):
            platform.staff.login(
                platform.db, username=zhao.username, password="Wrong-Passw0rd!", code="000000"
            )
    platform.db.run(lambda conn: platform.staff.unlock(conn, SYSTEM, zhao.id))
    clock.advance(timedelta(seconds=30))
    login(platform, zhao)


def test_sessions_end_when_idle_after_twelve_hours_and_at_logout(
    platform: Platform, clock: ManualClock
) -> None:
    sun = new_staff(platform, ["reviewer"])
    token = login(platform, sun)
    for _ in range(3):
        clock.advance(timedelta(minutes=29))
        principal(platform, token)  # in use: stays alive
    clock.advance(timedelta(minutes=30))
    with pytest.raises(errors.Unauthenticated):
        principal(platform, token)

    token, started = login(platform, sun), clock.now()
    for _ in range(30):  # used every 29 minutes: only the absolute cap ends it
        clock.advance(timedelta(minutes=29))
        try:
            principal(platform, token)
        except errors.Unauthenticated:
            break
    assert timedelta(hours=12) <= clock.now() - started < timedelta(hours=12, minutes=29)

    clock.advance(timedelta(seconds=30))
    token = login(platform, sun)
    platform.db.run(lambda conn: platform.staff.logout(conn, token))
    with pytest.raises(errors.Unauthenticated):
        principal(platform, token)


def test_staff_api_tokens_no_longer_authenticate(platform: Platform) -> None:
    """SEC-13: staff sign in with two factors; a bare API token is not enough."""
    zhou = new_staff(platform, ["reviewer"])
    token = platform.db.run(
        lambda conn: platform.auth.issue_token(conn, PrincipalType.STAFF, zhou.id, label="old")
    )
    with pytest.raises(errors.Unauthenticated):
        platform.db.read(lambda conn: platform.auth.authenticate(conn, token))


# --- passwords (AUTH-6, AUTH-9) --------------------------------------------------------------


def test_a_first_password_must_be_changed_before_anything_else(
    platform: Platform, clock: ManualClock
) -> None:
    """AUTH-6: an administrator-set password is expired from the start."""
    wu = new_staff(platform, ["reviewer"], must_change_password=True)
    token = login(platform, wu)
    with pytest.raises(errors.PasswordExpired):
        principal(platform, token)
    me = platform.db.run(
        lambda conn: platform.staff.authenticate_session(conn, token, allow_expired_password=True)
    )
    for current, new, refusal in (
        ("Wrong-Passw0rd-2026", "Brand-New-Passw0rd!", errors.InvalidCredentials),
        (PASSWORD, "short", errors.WeakPassword),
        (PASSWORD, "password1234", errors.WeakPassword),
        (PASSWORD, PASSWORD, errors.WeakPassword),
    ):
        with pytest.raises(refusal):
            platform.staff.change_password(platform.db, me, current=current, new=new)
    platform.staff.change_password(platform.db, me, current=PASSWORD, new="Brand-New-Passw0rd!")
    assert principal(platform, token).id == wu.id
    clock.advance(timedelta(seconds=30))
    with pytest.raises(errors.InvalidCredentials):
        login(platform, wu)  # the old password is gone
    login(platform, wu, password="Brand-New-Passw0rd!")


def test_passwords_expire_after_six_months(platform: Platform, clock: ManualClock) -> None:
    """AUTH-6: 182 days by default."""
    qian = new_staff(platform, ["operator"])
    clock.advance(timedelta(days=181))
    principal(platform, login(platform, qian))
    clock.advance(timedelta(days=1))
    token = login(platform, qian)
    with pytest.raises(errors.PasswordExpired):
        principal(platform, token)


def test_issuing_credentials_ends_sessions_and_shows_secrets_once(platform: Platform) -> None:
    zheng = new_staff(platform, ["operator"])
    token = login(platform, zheng)
    enrolment = platform.db.run(
        lambda conn: platform.staff.issue_credentials(conn, SYSTEM, zheng.id)
    )
    assert enrolment.password and enrolment.otpauth_uri.startswith("otpauth://totp/")
    with pytest.raises(errors.Unauthenticated):
        principal(platform, token)
    session = platform.staff.login(
        platform.db,
        username=zheng.username,
        password=enrolment.password,
        code=pyotp.TOTP(enrolment.totp_secret).at(platform.clock.now()),
    )
    assert session.password_expired


def test_bad_staff_input_is_refused(platform: Platform) -> None:
    new_staff(platform, username="feng")
    for username, refusal in (
        ("feng", errors.StaffExists),
        ("Feng Feng", errors.ValidationFailed),
        ("x", errors.ValidationFailed),
    ):
        with pytest.raises(refusal):
            platform.db.run(
                lambda conn, u=username: platform.staff.create(
                    conn, SYSTEM, username=u, display_name="冯"
                )
            )
    reviewer = new_staff(platform, ["reviewer"])
    with pytest.raises(errors.PermissionDenied):
        platform.db.run(
            lambda conn: platform.staff.create(
                conn, reviewer.member.principal, username="chen", display_name="陈"
            )
        )


# --- roles, offboarding, review (SEC-5, SEC-7) -------------------------------------------------


def test_conflicting_roles_cannot_be_assigned(platform: Platform) -> None:
    """SEC-5."""
    jiang = new_staff(platform, ["operator"])
    for role, refusal in (
        ("reviewer", errors.RoleConflict),
        ("auditor", errors.RoleConflict),
        ("operator", errors.RoleConflict),  # held already
        ("god", errors.UnknownRole),
    ):
        with pytest.raises(refusal):
            platform.db.run(
                lambda conn, r=role: platform.staff.assign_role(conn, SYSTEM, jiang.id, r)
            )
    platform.db.run(
        lambda conn: platform.staff.assign_role(conn, SYSTEM, jiang.id, "customer_service")
    )
    # Only the local command line grants without dual control.
    admin = new_staff(platform, ["administrator"])
    with pytest.raises(errors.PermissionDenied):
        platform.db.run(
            lambda conn: platform.staff.assign_role(
                conn, admin.member.principal, jiang.id, "reports"
            )
        )


def test_a_revoked_role_stops_working_at_once(platform: Platform) -> None:
    han = new_staff(platform, ["reviewer", "customer_service"])
    token = login(platform, han)
    assert "payments.review" in principal(platform, token).permissions
    admin = new_staff(platform, ["administrator"])
    platform.db.run(
        lambda conn: platform.staff.revoke_role(conn, admin.member.principal, han.id, "reviewer")
    )
    after = principal(platform, token)
    assert "payments.review" not in after.permissions
    assert after.roles == {"customer_service"}
    with pytest.raises(errors.NotFound):
        platform.db.run(
            lambda conn: platform.staff.revoke_role(
                conn, admin.member.principal, han.id, "reviewer"
            )
        )


def test_offboarding_removes_everything_at_once(platform: Platform, clock: ManualClock) -> None:
    """SEC-7: roles, sessions, tokens and pending requests go in one step;
    the very next call with the old session is refused."""
    leaver = new_staff(platform, ["operator"])
    token = login(platform, leaver)
    old_token = platform.db.run(
        lambda conn: platform.auth.issue_token(conn, PrincipalType.STAFF, leaver.id, label="old")
    )
    wallet = platform.db.run(
        lambda conn: platform.customers.register(conn, kind=CustomerKind.PERSON, name="蒋一")
    ).account_id
    asking = principal(platform, token)
    request = platform.db.run(
        lambda conn: platform.dual_control.request(
            conn,
            asking,
            "funds.adjust",
            {"account_id": wallet, "amount": "10.00", "direction": "credit"},
            "compensation",
        )
    )
    admin = new_staff(platform, ["administrator"])
    result = platform.db.run(
        lambda conn: platform.staff.offboard(conn, admin.member.principal, leaver.id)
    )
    assert result.roles_revoked == ["operator"]
    assert (result.sessions_ended, result.tokens_revoked, result.requests_cancelled) == (1, 1, 1)
    with pytest.raises(errors.Unauthenticated):
        principal(platform, token)
    with pytest.raises(errors.Unauthenticated):
        platform.db.read(lambda conn: platform.auth.authenticate(conn, old_token))
    clock.advance(timedelta(seconds=30))
    with pytest.raises(errors.InvalidCredentials):
        login(platform, leaver)
    cancelled = platform.db.read(lambda conn: platform.dual_control.get(conn, request.id))
    assert cancelled.state == "cancelled"
    member = platform.db.read(lambda conn: platform.staff.get(conn, leaver.id))
    assert (member.status, member.roles) == ("left", frozenset())
    with pytest.raises(errors.StaffInactive):
        platform.db.run(
            lambda conn: platform.staff.offboard(conn, admin.member.principal, leaver.id)
        )
    assert ("staff.offboard", "ok") in audit_actions(platform, f"staff:{leaver.id}")


def test_the_permission_review_names_roles_grants_logins_and_flags(
    platform: Platform, clock: ManualClock
) -> None:
    """SEC-7: who holds what since when from whom, last login; dormant,
    conflicting (data from before SoD) and left-with-roles are flagged."""
    active = new_staff(platform, ["reviewer"], username="active")
    dormant = new_staff(platform, ["operator"], username="dormant")
    legacy = new_staff(platform, ["operator"], username="legacy")

    def legacy_conflict(conn: Connection) -> None:  # as migrated from the old roles column
        conn.execute(
            insert(t.staff_roles),
            {"staff_id": legacy.id, "role": "reviewer", "granted_at": clock.now(),
             "granted_by": "migration:0006"},
        )  # fmt: skip

    platform.db.run(legacy_conflict)
    clock.advance(timedelta(days=91))
    login(platform, active)
    lines = {line.username: line for line in platform.db.read(platform.staff.review)}
    assert lines["active"].flags == []
    assert lines["active"].last_login_at == clock.now()
    assert [(g.role, g.granted_by) for g in lines["active"].roles] == [("reviewer", "system:tests")]
    assert "payments.review" in lines["active"].permissions
    assert lines["dormant"].flags == ["dormant"]
    assert lines["legacy"].flags == ["dormant", "conflicting_roles"]
    assert dormant.id and lines["dormant"].last_login_at is None


# --- behaviour alerts (SEC-8, SEC-9) ---------------------------------------------------------


def test_repeated_failures_raise_one_alert(platform: Platform, clock: ManualClock) -> None:
    """SEC-8/SEC-9: five failed logins or refused operations within the window."""
    ma = new_staff(platform, ["operator"])
    for _ in range(4):
        with pytest.raises(errors.TongbaoError):
            platform.staff.login(platform.db, username=ma.username, password="x" * 12, code="1")
        clock.advance(timedelta(minutes=1))
    assert platform.db.read(platform.staff.monitor.alerts) == []
    for _ in range(3):
        platform.staff.record_refusal(
            platform.db,
            ma.member.principal,
            action="dual_control.approve",
            target="dual_control:x",
            error=errors.PermissionDenied("needs funds.adjust.approve"),
        )
    alerts = platform.db.read(platform.staff.monitor.alerts)
    assert [(a.staff_id, a.kind) for a in alerts] == [(ma.id, "repeated_failures")]


def test_bulk_personal_data_reads_raise_an_alert(platform: Platform, clock: ManualClock) -> None:
    """SEC-8/AUD-4: 50 personal-data records within 15 minutes."""
    niu = new_staff(platform, ["compliance_officer"])
    platform.db.run(lambda conn: platform.staff.monitor.pii_read(conn, niu.id, 30, "customers"))
    clock.advance(timedelta(minutes=16))
    platform.db.run(lambda conn: platform.staff.monitor.pii_read(conn, niu.id, 30, "customers"))
    assert platform.db.read(platform.staff.monitor.alerts) == []  # the first 30 left the window
    platform.db.run(lambda conn: platform.staff.monitor.pii_read(conn, niu.id, 20, "customers"))
    assert [a.kind for a in platform.db.read(platform.staff.monitor.alerts)] == [
        "bulk_personal_data"
    ]


def test_out_of_pattern_permission_use_raises_alerts(
    platform: Platform, clock: ManualClock
) -> None:
    """SEC-8: a permission not used for 30 days by a settled member; a
    sensitive permission at night."""
    yang = new_staff(platform, ["reviewer"])
    who = yang.member.principal
    platform.staff.permission_used(platform.db, who, "payments.review")
    platform.staff.permission_used(platform.db, who, "alerts.view")
    assert platform.db.read(platform.staff.monitor.alerts) == []  # a newcomer has no pattern
    clock.advance(timedelta(days=31))
    platform.staff.permission_used(platform.db, who, "payments.review")  # still routine? no:
    kinds = [a.kind for a in platform.db.read(platform.staff.monitor.alerts)]
    assert kinds == ["unusual_permission"]  # not used for 31 days
    clock.advance(timedelta(days=1))
    platform.staff.permission_used(platform.db, who, "payments.review")
    assert len(platform.db.read(platform.staff.monitor.alerts)) == 1  # used yesterday: routine
    clock.advance(timedelta(hours=13))  # 23:00 in Shanghai
    platform.staff.permission_used(platform.db, who, "funds.adjust.approve")
    kinds = [a.kind for a in platform.db.read(platform.staff.monitor.alerts)]
    assert kinds[:2] == ["unusual_hour", "unusual_permission"] or set(kinds[:2]) == {
        "unusual_hour",
        "unusual_permission",
    }
