"""``tongbao audit``: verify, checkpoint, search and export the audit log (AUD-2, AUD-3).

``verify`` exits 0 when the chain and its checkpoints are intact and 1
otherwise, naming the first broken record. Searches and exports are
themselves recorded (AUD-4). ``audit sample`` draws random samples of
transactions for internal audit and tracks their findings (AUD-5); its
``--staff USERNAME`` records a step as that staff member's (who must hold the
permission the API would demand; the OS user is kept in the record as
``via``), otherwise as the OS user. Either way the drawer may not review the
sample, nor the audit side record a rectification (SEC-5).
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Connection

from tongbao import errors
from tongbao.audit import AuditQuery, AuditVerifyReport
from tongbao.cli import cli_actor, err, out, platform_for, refusals, show
from tongbao.clock import SHANGHAI

audit_app = typer.Typer(help="Tamper-evident audit log (AUD-1…AUD-4).", no_args_is_help=True)

Since = Annotated[
    str | None,
    typer.Option(help="From this time (ISO 8601; without a zone: Asia/Shanghai), inclusive"),
]
Until = Annotated[str | None, typer.Option(help="Before this time (as --since)")]
Actor = Annotated[str | None, typer.Option(help="Exactly this actor, e.g. staff:staff_…")]
Action = Annotated[str | None, typer.Option(help="Exactly this action, e.g. staff.login")]
Target = Annotated[str | None, typer.Option(help="Exactly this target, e.g. customer:cus_…")]
Keyword = Annotated[str | None, typer.Option(help="Text in the actor, action, target or details")]


def _instant(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise errors.ValidationFailed(f"--{name} {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=SHANGHAI)


def _query(
    actor: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    until: str | None,
    keyword: str | None,
) -> AuditQuery:
    return AuditQuery(
        actor, action, target, _instant("since", since), _instant("until", until), keyword
    )


def _record_use(platform: Any, action: str, details: dict[str, Any], outcome: str = "ok") -> None:
    platform.db.run(
        lambda conn: platform.audit.record(
            conn,
            actor=cli_actor(),
            action=action,
            target="audit_log",
            outcome=outcome,
            details=details,
        )
    )


def _print_report(report: AuditVerifyReport) -> None:
    for problem in report.checkpoint_problems:
        err.print(str(problem), markup=False, highlight=False)
    for found in report.breaks[:20]:
        err.print(str(found), markup=False, highlight=False)
    if report.break_count > 20:
        err.print(f"… and {report.break_count - 20} more", markup=False)
    first = report.first_break
    if first is not None:
        err.print(
            f"audit log BROKEN: first broken record seq {first.seq} ({first.kind}): "
            f"{first.detail}; {report.summary()}",
            markup=False,
            highlight=False,
        )
    else:
        err.print(
            f"audit log BROKEN: the checkpoint file cannot be trusted; {report.summary()}",
            markup=False,
        )


@audit_app.command("verify")
@refusals
def audit_verify() -> None:
    """Check every record's hash and link, gaps, the chain head and the signed
    checkpoints. Exits 1 naming the first broken record."""
    with platform_for() as platform:
        with Progress(
            TextColumn("verifying audit chain"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("verify", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = platform.audit.verify(platform.db, progress=progress)
        first = report.first_break
        _record_use(
            platform,
            "audit.verify",
            {"records": report.records, "first_break": str(first) if first else None},
            outcome="ok" if report.ok else "failed",
        )
    if report.ok:
        out.print(f"audit log OK: {report.summary()}", markup=False)
        return
    _print_report(report)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
@refusals
def audit_checkpoint() -> None:
    """Sign the committed chain head now and append it to the checkpoint file
    (the server does this every TONGBAO_AUDIT_CHECKPOINT_INTERVAL_SECONDS)."""
    with platform_for() as platform:
        cp = platform.audit.checkpoint(platform.db)
        path = platform.settings.audit_checkpoint_file
    if cp is None:
        out.print("nothing to checkpoint: the chain head has not moved", markup=False)
        return
    out.print(
        f"checkpoint seq {cp.seq} hash {cp.hash} signed {cp.at.isoformat()} -> {path}",
        markup=False,
    )


@audit_app.command("search")
@refusals
def audit_search(
    actor: Actor = None,
    action: Action = None,
    target: Target = None,
    since: Since = None,
    until: Until = None,
    keyword: Keyword = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next cursor of the previous page")] = None,
) -> None:
    """Audit records matching the filters, newest first."""
    query = _query(actor, action, target, since, until, keyword)
    with platform_for() as platform:
        page = platform.db.read(
            lambda conn: platform.audit.search(conn, query, cursor=cursor, limit=limit)
        )
        _record_use(
            platform,
            "audit.search",
            {"filters": query.described(), "cursor": cursor, "results": len(page.items)},
        )
    table = Table("seq", "time", "actor", "action", "target", "outcome", "details")
    for r in page.items:
        table.add_row(
            str(r.seq),
            r.at.astimezone(SHANGHAI).isoformat(timespec="seconds"),
            r.actor,
            r.action,
            r.target,
            r.outcome,
            r.details,
        )
    show(table)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}", markup=False)


@audit_app.command("export")
@refusals
def audit_export(
    out_file: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="CSV file to write (UTF-8 with BOM)")
    ],
    actor: Actor = None,
    action: Action = None,
    target: Target = None,
    since: Since = None,
    until: Until = None,
    keyword: Keyword = None,
) -> None:
    """Every matching record, oldest first, as a CSV report."""
    query = _query(actor, action, target, since, until, keyword)
    with platform_for() as platform:
        matching = platform.db.read(lambda conn: platform.audit.count(conn, query))
        with out_file.open("wb") as f:
            for chunk in platform.audit.export_csv(platform.db, query):
                f.write(chunk)
        # Recorded after the export, so the report does not contain its own record.
        _record_use(
            platform,
            "audit.export",
            {"filters": query.described(), "records": matching, "file": out_file.name},
        )
    out.print(f"exported {matching} records to {out_file}", markup=False)


# --- internal-audit samples (AUD-5) -------------------------------------------------------

sample_app = typer.Typer(
    help="Random samples of transactions for internal audit (AUD-5).", no_args_is_help=True
)
audit_app.add_typer(sample_app, name="sample")


def _day(name: str, text: str) -> datetime:
    """The start of a calendar day in Asia/Shanghai."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise errors.ValidationFailed(f"--{name} {text!r} is not a date (YYYY-MM-DD)") from None
    return datetime.combine(day, time(), tzinfo=SHANGHAI)


StaffName = Annotated[
    str | None,
    typer.Option(
        "--staff",
        help="Act as this staff member (username), who must hold the permission; "
        "default: the OS user",
    ),
]


class Acting(NamedTuple):
    actor: str
    via: str | None


def _acting(platform: Any, conn: Connection, username: str | None, permission: str) -> Acting:
    """Who the records name: the staff member ``username`` (the OS user kept as
    ``via``), or else the OS user."""
    if username is None:
        return Acting(cli_actor(), None)
    member = platform.staff.find(conn, username)
    if member is None:
        raise errors.StaffNotFound(f"no staff member {username!r}")
    if member.status != "active":
        raise errors.StaffInactive(f"{username} has left")
    if permission not in member.principal.permissions:
        raise errors.PermissionDenied(f"{username} does not hold the permission {permission}")
    return Acting(member.principal.actor, cli_actor())


def _local(instant: datetime | None) -> str:
    return instant.astimezone(SHANGHAI).isoformat(timespec="seconds") if instant else ""


@sample_app.command("draw")
@refusals
def sample_draw(
    since: Annotated[str, typer.Option(help="First day of the period (YYYY-MM-DD, Shanghai)")],
    until: Annotated[str, typer.Option(help="Day after the period (YYYY-MM-DD), exclusive")],
    size: Annotated[int, typer.Option(help="How many transactions to sample")],
    staff: StaffName = None,
) -> None:
    """Draw a random sample of the completed transactions created in the period.
    The seed is recorded, so the draw can be repeated to show it was random."""
    start, end = _day("since", since), _day("until", until)

    def draw(conn: Connection) -> Any:
        actor, via = _acting(platform, conn, staff, "audit.sample.draw")
        return platform.audit_sampling.draw_sample(conn, actor, start, end, size, via=via)

    with platform_for() as platform:
        sample = platform.db.run(draw)
    out.print(
        f"sample {sample.id}: {sample.size} of {sample.population} transactions, "
        f"seed {sample.seed}",
        markup=False,
    )
    table = Table("payment", "serial no")
    for item in sample.items:
        table.add_row(item.payment_id, item.serial_no)
    show(table)


@sample_app.command("result")
@refusals
def sample_result(
    sample_id: Annotated[str, typer.Argument(metavar="SAMPLE")],
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT")],
    ok: Annotated[bool, typer.Option("--ok", help="Checked, nothing wrong")] = False,
    problem: Annotated[str | None, typer.Option(help="The problem found")] = None,
    staff: StaffName = None,
) -> None:
    """Record the review of one sampled transaction: --ok, or --problem TEXT
    (to be rectified within TONGBAO_AUDIT_RECTIFICATION_DAYS). Not by whoever
    drew the sample."""
    if ok == (problem is not None):
        raise errors.ValidationFailed("give exactly one of --ok and --problem TEXT")

    def review(conn: Connection) -> Any:
        actor, via = _acting(platform, conn, staff, "audit.sample.review")
        return platform.audit_sampling.record_result(
            conn, actor, sample_id, payment_id, ok, problem, via=via
        )

    with platform_for() as platform:
        item = platform.db.run(review)
    deadline = f", rectify by {_local(item.deadline)}" if item.deadline else ""
    out.print(f"{item.payment_id}: {item.state}{deadline}", markup=False)


@sample_app.command("rectify")
@refusals
def sample_rectify(
    sample_id: Annotated[str, typer.Argument(metavar="SAMPLE")],
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT")],
    note: Annotated[str, typer.Option(help="What was done about the problem")],
    staff: StaffName = None,
) -> None:
    """Close a problem found in a sampled transaction (the business side: not
    whoever drew the sample or raised the finding)."""

    def rectify(conn: Connection) -> Any:
        actor, via = _acting(platform, conn, staff, "audit.sample.rectify")
        return platform.audit_sampling.rectify(conn, actor, sample_id, payment_id, note, via=via)

    with platform_for() as platform:
        item = platform.db.run(rectify)
    out.print(f"{item.payment_id}: {item.state}", markup=False)


@sample_app.command("report")
@refusals
def sample_report(sample_id: Annotated[str, typer.Argument(metavar="SAMPLE")]) -> None:
    """The audit report of a sample: counts per state, problems and their deadlines."""
    with platform_for() as platform:
        report = platform.db.read(lambda conn: platform.audit_sampling.report(conn, sample_id))
    sample = report.sample
    counts = ", ".join(f"{state} {count}" for state, count in report.counts.items())
    out.print(
        f"sample {sample.id}: {_local(sample.period_start)} .. {_local(sample.period_end)}, "
        f"{sample.size} of {sample.population}, seed {sample.seed}, drawn by "
        f"{sample.drawn_by}; {counts}; {len(report.overdue)} overdue",
        markup=False,
    )
    overdue = {item.payment_id for item in report.overdue}
    table = Table(
        "payment", "serial no", "state", "deadline", "overdue", "finding", "rectification"
    )
    for item in sample.items:
        table.add_row(
            item.payment_id,
            item.serial_no,
            item.state,
            _local(item.deadline),
            "OVERDUE" if item.payment_id in overdue else "",
            item.finding or "",
            item.rectification or "",
        )
    show(table)
