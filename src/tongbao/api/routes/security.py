"""/v1/admin/vulnerabilities and /v1/admin/pentests: the vulnerability register
and the penetration tests (SEC-10), for staff.

``vulns.view`` reads the register and its report; ``vulns.manage`` registers
vulnerabilities and pentests and marks them fixed; ``vulns.accept_risk``
accepts a risk, never the reporter's own. Mutations take an
Idempotency-Key and every refusal is audited, as on every admin route. The
dependency check itself runs on the server (``tongbao security deps-check``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from tongbao.api.deps import MutationDep, PlatformDep, audited_run, require_permission
from tongbao.auth import Principal
from tongbao.security.register import NewFinding
from tongbao.security.vulnerabilities import (
    MAX_TEXT,
    Pentest,
    Severity,
    Vulnerability,
    VulnSource,
    VulnStatus,
)

router = APIRouter(prefix="/v1/admin", tags=["security"])

Viewer = Annotated[Principal, Depends(require_permission("vulns.view"))]
Manager = Annotated[Principal, Depends(require_permission("vulns.manage"))]
RiskOwner = Annotated[Principal, Depends(require_permission("vulns.accept_risk"))]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class VulnerabilityOut(BaseModel):
    object: str = "vulnerability"
    id: str
    source: VulnSource
    title: str
    severity: Severity
    package: str | None
    version: str | None
    advisory_id: str | None
    fixed_in: str | None
    detail: str | None
    pentest_id: str | None
    reported_by: str
    found_at: datetime
    deadline: datetime = Field(description="found_at + TONGBAO_VULN_FIX_HOURS (24, SEC-10)")
    status: VulnStatus
    overdue: bool
    closed_by: str | None
    closed_at: datetime | None
    resolution: str | None


class VulnerabilityList(BaseModel):
    object: str = "list"
    data: list[VulnerabilityOut]


class PentestOut(BaseModel):
    object: str = "pentest"
    id: str
    tested_on: date
    scope: str
    tester: str
    summary: str | None
    recorded_by: str
    recorded_at: datetime
    findings: int


class PentestList(BaseModel):
    object: str = "list"
    data: list[PentestOut]


class VulnReportOut(BaseModel):
    object: str = "vulnerability_report"
    at: datetime
    ok: bool = Field(description="Nothing overdue and the last pentest within the interval")
    open: list[VulnerabilityOut]
    overdue: list[str] = Field(description="Ids of open vulnerabilities past their deadline")
    accepted: list[VulnerabilityOut]
    fixed: int
    fixed_late: int
    last_pentest: PentestOut | None
    pentest_due_on: date | None
    pentest_overdue: bool


class FindingIn(BaseModel):
    title: Text
    severity: Severity
    detail: Text | None = None

    def finding(self) -> NewFinding:
        return NewFinding(self.title, self.severity, self.detail)


class PentestIn(BaseModel):
    tested_on: date
    scope: Text
    tester: Annotated[str, Field(min_length=1, max_length=200)]
    summary: Text | None = None
    findings: Annotated[list[FindingIn], Field(max_length=200)] = []


class NoteIn(BaseModel):
    note: Text


class ReasonIn(BaseModel):
    reason: Text


def _vuln(v: Vulnerability, now: datetime) -> VulnerabilityOut:
    return VulnerabilityOut(**asdict(v), overdue=v.overdue(now))


def _pentest(p: Pentest) -> PentestOut:
    return PentestOut(**asdict(p))


@router.get(
    "/vulnerabilities", response_model=VulnerabilityList, summary="The vulnerability register"
)
async def list_vulnerabilities(
    platform: PlatformDep,
    staff: Viewer,
    status: Annotated[VulnStatus | None, Query()] = None,
) -> VulnerabilityList:
    vulns = platform.db.read(lambda conn: platform.vulnerabilities.search(conn, status))
    now = platform.clock.now()
    return VulnerabilityList(data=[_vuln(v, now) for v in vulns])


@router.get(
    "/vulnerabilities/report",
    response_model=VulnReportOut,
    summary="Overdue vulnerabilities and the pentest interval (SEC-10)",
)
async def vulnerability_report(platform: PlatformDep, staff: Viewer) -> VulnReportOut:
    report = platform.db.read(platform.vulnerabilities.report)
    now = report.at
    return VulnReportOut(
        at=now,
        ok=report.ok,
        open=[_vuln(v, now) for v in report.open],
        overdue=[v.id for v in report.overdue],
        accepted=[_vuln(v, now) for v in report.accepted],
        fixed=report.fixed,
        fixed_late=report.fixed_late,
        last_pentest=_pentest(report.last_pentest) if report.last_pentest else None,
        pentest_due_on=report.pentest_due_on,
        pentest_overdue=report.pentest_overdue,
    )


@router.post(
    "/vulnerabilities",
    response_model=VulnerabilityOut,
    status_code=201,
    summary="Register a vulnerability found by staff",
)
async def add_vulnerability(
    body: FindingIn, platform: PlatformDep, staff: Manager, mutation: MutationDep
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        vuln = platform.vulnerabilities.add(conn, staff.actor, body.finding())
        return 201, _vuln(vuln, platform.clock.now())

    return audited_run(mutation, "security.vuln.register", "vulnerability_register", operation)


@router.post(
    "/vulnerabilities/{vuln_id}/fix",
    response_model=VulnerabilityOut,
    summary="Mark a vulnerability fixed",
)
async def fix_vulnerability(
    vuln_id: str, body: NoteIn, platform: PlatformDep, staff: Manager, mutation: MutationDep
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        vuln = platform.vulnerabilities.fix(conn, staff.actor, vuln_id, body.note)
        return 200, _vuln(vuln, platform.clock.now())

    return audited_run(mutation, "security.vuln.fix", f"vulnerability:{vuln_id}", operation)


@router.post(
    "/vulnerabilities/{vuln_id}/accept",
    response_model=VulnerabilityOut,
    summary="Accept the risk of a vulnerability (not the reporter)",
)
async def accept_vulnerability(
    vuln_id: str, body: ReasonIn, platform: PlatformDep, staff: RiskOwner, mutation: MutationDep
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        vuln = platform.vulnerabilities.accept(conn, staff.actor, vuln_id, body.reason)
        return 200, _vuln(vuln, platform.clock.now())

    return audited_run(mutation, "security.vuln.accept", f"vulnerability:{vuln_id}", operation)


@router.get("/pentests", response_model=PentestList, summary="Penetration tests, newest first")
async def list_pentests(platform: PlatformDep, staff: Viewer) -> PentestList:
    return PentestList(
        data=[_pentest(p) for p in platform.db.read(platform.vulnerabilities.pentests)]
    )


@router.post(
    "/pentests",
    response_model=PentestOut,
    status_code=201,
    summary="Record a penetration test and register its findings",
)
async def record_pentest(
    body: PentestIn, platform: PlatformDep, staff: Manager, mutation: MutationDep
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        pentest, _ = platform.vulnerabilities.record_pentest(
            conn,
            staff.actor,
            tested_on=body.tested_on,
            scope=body.scope,
            tester=body.tester,
            summary=body.summary,
            findings=[f.finding() for f in body.findings],
        )
        return 201, _pentest(pentest)

    return audited_run(mutation, "security.pentest.record", "pentests", operation)
