"""``tongbao security``: vulnerability management (SEC-10).

``deps-check`` matches the locked dependencies against an OSV vulnerability
database and registers what it finds. It exits 0 only when a database was
really consulted and nothing was found, 1 when something was found, and 2
(one line ``error: <code>: <detail>``) when it could not check at all, e.g.
``vulnerability_db_unavailable`` when no database is configured.
``vulns`` keeps the register (24-hour fix deadlines), ``pentest`` the
quarterly penetration tests.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tongbao import errors
from tongbao.cli import cli_actor, err, out, platform_for, refusals, show
from tongbao.clock import SHANGHAI
from tongbao.config import Settings
from tongbao.security.register import NewFinding
from tongbao.security.vulnerabilities import (
    CheckResult,
    Vulnerability,
    VulnStatus,
    parse_severity,
)

security_app = typer.Typer(
    help="Vulnerability management: dependency check, register, pentests (SEC-10).",
    no_args_is_help=True,
)
vulns_app = typer.Typer(help="The vulnerability register (SEC-10).", no_args_is_help=True)
pentest_app = typer.Typer(help="Penetration tests (SEC-10: quarterly).", no_args_is_help=True)
security_app.add_typer(vulns_app, name="vulns")
security_app.add_typer(pentest_app, name="pentest")

CANNOT_CHECK = 2
"""Exit status of a check that could not be made (no database, bad lock file)."""


def _local(instant: datetime | None) -> str:
    return instant.astimezone(SHANGHAI).isoformat(timespec="minutes") if instant else ""


def _print_findings(result: CheckResult) -> None:
    table = Table("package", "version", "advisory", "severity", "fixed in", "summary")
    for f in result.findings:
        table.add_row(
            f.package, f.version, f.advisory_id, f.severity, f.fixed_in or "-", f.summary[:80]
        )
    if result.findings:
        show(table)
    out.print(
        f"checked {result.packages} packages against {result.advisories} advisories "
        f"({result.source}): {len(result.findings)} vulnerable",
        markup=False,
        highlight=False,
    )


@security_app.command("deps-check")
def deps_check(
    lock: Annotated[Path, typer.Option(help="The lock file to check")] = Path("uv.lock"),
    db: Annotated[
        Path | None, typer.Option(help="OSV database (zip or directory); TONGBAO_VULN_DB_PATH")
    ] = None,
    installed: Annotated[
        bool, typer.Option(help="Check this Python environment's distributions, not --lock")
    ] = False,
    register: Annotated[
        bool, typer.Option(help="Record the findings in the vulnerability register")
    ] = True,
) -> None:
    """Match the dependencies against a vulnerability database (OSV format).
    Exit 0: consulted, nothing found; 1: vulnerabilities found; 2: could not check."""
    from tongbao.security.osv import (  # noqa: PLC0415
        check,
        environment_packages,
        lock_packages,
        source_for,
    )

    try:
        source = source_for(db or Settings().vuln_db_path)
        packages = environment_packages() if installed else lock_packages(lock)
        result = check(packages, source)
        _print_findings(result)
        if register:
            with platform_for() as platform:
                done = platform.db.run(
                    lambda conn: platform.vulnerabilities.register_check(conn, cli_actor(), result)
                )
            out.print(
                f"register: {len(done.registered)} new, {done.known} already known, "
                f"{len(done.fixed)} no longer found and marked fixed",
                markup=False,
            )
    except errors.TongbaoError as exc:
        err.print(f"error: {exc.code}: {exc.detail}", markup=False, highlight=False)
        raise typer.Exit(CANNOT_CHECK) from None
    if result.findings:
        raise typer.Exit(1)


# --- the register ------------------------------------------------------------------------


def _vuln_table(vulns: list[Vulnerability], now: datetime) -> Table:
    table = Table(
        "id", "status", "severity", "title", "found", "deadline", "overdue", "source", "fixed in"
    )
    for v in vulns:
        table.add_row(
            v.id,
            v.status,
            v.severity,
            v.title,
            _local(v.found_at),
            _local(v.deadline),
            "OVERDUE" if v.overdue(now) else "",
            v.source,
            v.fixed_in or "",
        )
    return table


@vulns_app.command("list")
@refusals
def vulns_list(
    status: Annotated[
        str | None, typer.Option(help="open, fixed or accepted-risk; default: all")
    ] = None,
) -> None:
    """Registered vulnerabilities by deadline."""
    try:
        wanted = VulnStatus(status) if status else None
    except ValueError:
        raise errors.ValidationFailed(
            f"--status {status!r} is not one of {', '.join(s.value for s in VulnStatus)}"
        ) from None
    with platform_for() as platform:
        vulns = platform.db.read(lambda conn: platform.vulnerabilities.search(conn, wanted))
        now = platform.clock.now()
    show(_vuln_table(vulns, now))


@vulns_app.command("add")
@refusals
def vulns_add(
    title: Annotated[str, typer.Option(help="What is vulnerable")],
    severity: Annotated[str, typer.Option(help="critical, high, medium, low or unknown")],
    detail: Annotated[str | None, typer.Option(help="How it was found, where it is")] = None,
) -> None:
    """Register a vulnerability found by staff (fix within TONGBAO_VULN_FIX_HOURS)."""
    finding = NewFinding(title, parse_severity(severity), detail)
    with platform_for() as platform:
        vuln = platform.db.run(
            lambda conn: platform.vulnerabilities.add(conn, cli_actor(), finding)
        )
    out.print(f"{vuln.id}: open, fix by {_local(vuln.deadline)}", markup=False)


def _close(vuln_id: str, accept: bool, text: str) -> None:
    with platform_for() as platform:
        register = platform.vulnerabilities
        close = register.accept if accept else register.fix
        vuln = platform.db.run(lambda conn: close(conn, cli_actor(), vuln_id, text))
    late = " (after its deadline)" if vuln.closed_at and vuln.closed_at > vuln.deadline else ""
    out.print(f"{vuln.id}: {vuln.status}{late}", markup=False)


@vulns_app.command("fix")
@refusals
def vulns_fix(
    vuln_id: Annotated[str, typer.Argument(metavar="VULNERABILITY")],
    note: Annotated[str, typer.Option(help="How it was fixed")],
) -> None:
    """Mark a vulnerability fixed."""
    _close(vuln_id, False, note)


@vulns_app.command("accept")
@refusals
def vulns_accept(
    vuln_id: Annotated[str, typer.Argument(metavar="VULNERABILITY")],
    reason: Annotated[str, typer.Option(help="Why the risk is accepted instead of fixed")],
) -> None:
    """Accept the risk of a vulnerability (not by who reported it)."""
    _close(vuln_id, True, reason)


@vulns_app.command("report")
@refusals
def vulns_report() -> None:
    """Open vulnerabilities (overdue ones flagged), accepted risks, and whether the
    quarterly penetration test is due. Exits 1 when anything is overdue."""
    with platform_for() as platform:
        report = platform.db.read(platform.vulnerabilities.report)
    last = report.last_pentest
    pentest = (
        f"last pentest {last.tested_on.isoformat()} ({last.id}), next due "
        f"{report.pentest_due_on.isoformat() if report.pentest_due_on else 'now'}"
        if last
        else "no pentest recorded"
    )
    out.print(
        f"{len(report.open)} open, {len(report.overdue)} overdue, {len(report.accepted)} "
        f"accepted risks, {report.fixed} fixed ({report.fixed_late} late); {pentest}",
        markup=False,
        highlight=False,
    )
    if report.pentest_overdue:
        out.print("PENTEST OVERDUE: SEC-10 asks for one every quarter", markup=False)
    if report.open or report.accepted:
        show(_vuln_table([*report.open, *report.accepted], report.at))
    if not report.ok:
        raise typer.Exit(1)


# --- penetration tests -------------------------------------------------------------------


def _finding(text: str) -> NewFinding:
    severity, sep, title = text.partition(":")
    if not sep or not title.strip():
        raise errors.ValidationFailed(f"--finding {text!r} is not SEVERITY:TITLE")
    return NewFinding(title.strip(), parse_severity(severity))


@pentest_app.command("record")
@refusals
def pentest_record(
    tested_on: Annotated[str, typer.Option("--date", help="Day of the test (YYYY-MM-DD)")],
    scope: Annotated[str, typer.Option(help="What was tested")],
    tester: Annotated[str, typer.Option(help="Who tested (firm or person)")],
    summary: Annotated[str | None, typer.Option(help="The test's conclusion")] = None,
    finding: Annotated[
        list[str] | None,
        typer.Option(help="A finding as SEVERITY:TITLE, e.g. high:XSS in /docs; repeatable"),
    ] = None,
) -> None:
    """Record a penetration test; each finding goes into the register with its deadline."""
    try:
        day = date.fromisoformat(tested_on)
    except ValueError:
        raise errors.ValidationFailed(f"--date {tested_on!r} is not a date (YYYY-MM-DD)") from None
    findings = [_finding(f) for f in finding or []]
    with platform_for() as platform:
        pentest, vulns = platform.db.run(
            lambda conn: platform.vulnerabilities.record_pentest(
                conn,
                cli_actor(),
                tested_on=day,
                scope=scope,
                tester=tester,
                summary=summary,
                findings=findings,
            )
        )
    out.print(f"pentest {pentest.id} of {pentest.tested_on}: {len(vulns)} findings", markup=False)
    for v in vulns:
        out.print(f"{v.id}: {v.severity} {v.title}, fix by {_local(v.deadline)}", markup=False)


@pentest_app.command("list")
@refusals
def pentest_list() -> None:
    """Recorded penetration tests, newest first."""
    with platform_for() as platform:
        pentests = platform.db.read(platform.vulnerabilities.pentests)
    table = Table("id", "date", "tester", "scope", "findings", "recorded by")
    for p in pentests:
        table.add_row(
            p.id, p.tested_on.isoformat(), p.tester, p.scope, str(p.findings), p.recorded_by
        )
    show(table)
