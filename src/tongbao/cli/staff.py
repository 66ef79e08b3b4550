"""``tongbao staff``: staff accounts, permission review (SEC-7), behaviour alerts (SEC-8).

The command line runs on the server with database access, so it acts as a
system principal (``system:<os user>`` in the audit log): it may bootstrap the
first administrator's roles without dual control. Everything else a staff
member does goes through the API with their own session.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Connection

from tongbao.auth import Principal, PrincipalType
from tongbao.cli import out, platform_for, refusals, show

staff_app = typer.Typer(
    help="Staff accounts, permission review and behaviour alerts.", no_args_is_help=True
)


def _cli() -> Principal:
    return Principal(PrincipalType.SYSTEM, getpass.getuser())


@staff_app.command("create")
@refusals
def staff_create(
    username: Annotated[str, typer.Argument()],
    display_name: Annotated[str, typer.Option("--name", help="Display name")],
    role: Annotated[
        list[str] | None, typer.Option(help="Role to assign at once (bootstrap; repeatable)")
    ] = None,
) -> None:
    """Create a staff member, print a temporary password and TOTP secret once."""
    with platform_for() as platform:
        actor = _cli()

        def create(conn: Connection) -> tuple[str, str, str, str]:
            member = platform.staff.create(
                conn, actor, username=username, display_name=display_name
            )
            for name in role or []:
                platform.staff.assign_role(conn, actor, member.id, name)
            enrolment = platform.staff.issue_credentials(conn, actor, member.id)
            assert enrolment.password is not None
            return member.id, enrolment.password, enrolment.totp_secret, enrolment.otpauth_uri

        staff_id, password, secret, uri = platform.db.run(create)
    out.print(
        f"staff {staff_id} ({username})\ntemporary password {password} (change at first login)\n"
        f"TOTP secret {secret}\n{uri}\n(shown once)",
        markup=False,
        highlight=False,
    )


@staff_app.command("list")
@refusals
def staff_list() -> None:
    """Staff members with their roles."""
    with platform_for() as platform:
        members = platform.db.read(platform.staff.members)
    table = Table("staff", "username", "name", "status", "roles", "last login")
    for m in members:
        table.add_row(
            m.id,
            m.username,
            m.display_name,
            m.status,
            ",".join(sorted(m.roles)),
            m.last_login_at.isoformat() if m.last_login_at else "never",
        )
    show(table)


@staff_app.command("review")
@refusals
def staff_review(
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the report as CSV here")
    ] = None,
) -> None:
    """Quarterly permission review (SEC-7): roles, since when, by whom, last login, flags."""
    from tongbao.auth.staff import review_csv  # noqa: PLC0415

    with platform_for() as platform:
        lines = platform.db.read(platform.staff.review)
    table = Table("username", "status", "role", "granted", "by", "last login", "flags")
    for line in lines:
        last = line.last_login_at.isoformat() if line.last_login_at else "never"
        flags = " ".join(line.flags)
        if not line.roles:
            table.add_row(line.username, line.status, "", "", "", last, flags)
        for g in line.roles:
            table.add_row(
                line.username, line.status, g.role, g.granted_at.isoformat(), g.granted_by,
                last, flags,
            )  # fmt: skip
    show(table)
    if csv_file is not None:
        csv_file.write_text(review_csv(lines), encoding="utf-8")
        out.print(f"wrote {csv_file}")


@staff_app.command("alerts")
@refusals
def staff_alerts(limit: Annotated[int, typer.Option(min=1, max=500)] = 50) -> None:
    """Staff behaviour alerts (SEC-8) and unusual login locations (SEC-9), newest first."""
    with platform_for() as platform:
        alerts = platform.db.read(lambda conn: platform.staff.monitor.alerts(conn, limit=limit))
    table = Table("raised", "staff", "kind", "detail")
    for a in alerts:
        table.add_row(a.raised_at.isoformat(), a.staff_id, a.kind, a.detail)
    show(table)


@staff_app.command("offboard")
@refusals
def staff_offboard(staff_id: str) -> None:
    """SEC-7: revoke every role, session and token of a leaving member at once."""
    with platform_for() as platform:
        result = platform.db.run(lambda conn: platform.staff.offboard(conn, _cli(), staff_id))
    out.print(
        f"{staff_id} left: roles revoked {','.join(result.roles_revoked) or '-'}, "
        f"sessions ended {result.sessions_ended}, tokens revoked {result.tokens_revoked}, "
        f"requests cancelled {result.requests_cancelled}"
    )


@staff_app.command("unlock")
@refusals
def staff_unlock(staff_id: str) -> None:
    """AUTH-3: lift a login lock (after verifying who asks)."""
    with platform_for() as platform:
        platform.db.run(lambda conn: platform.staff.unlock(conn, _cli(), staff_id))
    out.print(f"{staff_id} unlocked")
