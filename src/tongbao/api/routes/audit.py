"""/v1/audit: the audit log for internal audit — search, CSV export, chain check.

Only auditors get in, and every search, export and verification is itself
recorded in the audit log (AUD-4: who looked at what, and when).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from tongbao.api.deps import PlatformDep, require_permission
from tongbao.audit import AuditQuery, AuditRecord, AuditVerifyReport
from tongbao.auth import Principal
from tongbao.platform import Platform

router = APIRouter(prefix="/v1/audit", tags=["audit"])
# SEC-4: permissions of the auditor role (tongbao.auth.permissions).
Reader = Annotated[Principal, Depends(require_permission("audit.read"))]
Exporter = Annotated[Principal, Depends(require_permission("audit.export"))]
Verifier = Annotated[Principal, Depends(require_permission("audit.verify"))]


class AuditRecordOut(BaseModel):
    object: str = "audit_record"
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    source_ip: str | None
    before_digest: str | None = Field(description="Digest of the state before, not the state")
    after_digest: str | None = Field(description="Digest of the state after, not the state")
    details: dict[str, Any]
    algorithm: str
    prev_hash: str
    hash: str


class AuditRecordPage(BaseModel):
    object: str = "list"
    next_cursor: str | None
    data: list[AuditRecordOut]


class ChainBreakOut(BaseModel):
    seq: int
    kind: str
    detail: str


class AuditVerifyOut(BaseModel):
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    checkpoints: int
    break_count: int
    first_break: ChainBreakOut | None
    breaks: list[ChainBreakOut] = Field(description="The first 100 breaks, in seq order")
    checkpoint_problems: list[str]


def _present(r: AuditRecord) -> AuditRecordOut:
    return AuditRecordOut(
        seq=r.seq,
        at=r.at,
        actor=r.actor,
        action=r.action,
        target=r.target,
        outcome=r.outcome,
        source_ip=r.source_ip,
        before_digest=r.before_digest,
        after_digest=r.after_digest,
        details=r.details_data,
        algorithm=r.algorithm,
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def _verify_out(report: AuditVerifyReport) -> AuditVerifyOut:
    breaks = [ChainBreakOut(seq=b.seq, kind=b.kind, detail=b.detail) for b in report.breaks]
    return AuditVerifyOut(
        ok=report.ok,
        records=report.records,
        head_seq=report.head.seq,
        head_hash=report.head.hash,
        checkpoints=report.checkpoints,
        break_count=report.break_count,
        first_break=breaks[0] if breaks else None,
        breaks=breaks[:100],
        checkpoint_problems=[str(p) for p in report.checkpoint_problems],
    )


async def _query(
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="From this instant (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="Before this instant")] = None,
    keyword: Annotated[
        str | None, Query(max_length=200, description="In actor, action, target or details")
    ] = None,
) -> AuditQuery:
    return AuditQuery(actor, action, target, since, until, keyword)


QueryDep = Annotated[AuditQuery, Depends(_query)]


def _source_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _audit_own_use(
    platform: Platform,
    principal: Principal,
    request: Request,
    action: str,
    details: dict[str, Any],
    outcome: str = "ok",
) -> None:
    platform.db.run(
        lambda conn: platform.audit.record(
            conn,
            actor=principal.actor,
            action=action,
            target="audit_log",
            outcome=outcome,
            source_ip=_source_ip(request),
            details=details,
        )
    )


@router.get(
    "/records",
    response_model=AuditRecordPage,
    summary="Search the audit log: keyword and filters, newest first (AUD-2)",
)
async def search(
    platform: PlatformDep,
    auditor: Reader,
    request: Request,
    query: QueryDep,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AuditRecordPage:
    page = platform.db.read(
        lambda conn: platform.audit.search(conn, query, cursor=cursor, limit=limit)
    )
    _audit_own_use(
        platform,
        auditor,
        request,
        "audit.search",
        {"filters": query.described(), "cursor": cursor, "results": len(page.items)},
    )
    return AuditRecordPage(next_cursor=page.next_cursor, data=[_present(r) for r in page.items])


@router.get(
    "/records/{seq}",
    response_model=AuditRecordOut,
    summary="One audit record",
)
async def get_record(
    seq: int, platform: PlatformDep, auditor: Reader, request: Request
) -> AuditRecordOut:
    record = platform.db.read(lambda conn: platform.audit.get(conn, seq))
    _audit_own_use(platform, auditor, request, "audit.read", {"seq": seq})
    return _present(record)


@router.get(
    "/export.csv",
    summary="Every matching record as CSV (UTF-8 with BOM, oldest first) (AUD-2)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_csv(
    platform: PlatformDep, auditor: Exporter, request: Request, query: QueryDep
) -> StreamingResponse:
    def count(conn: Connection) -> int:
        return platform.audit.count(conn, query)

    matching = platform.db.read(count)  # also refuses malformed filters up front
    _audit_own_use(
        platform,
        auditor,
        request,
        "audit.export",
        {"filters": query.described(), "records": matching},
    )
    return StreamingResponse(
        platform.audit.export_csv(platform.db, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-records.csv"'},
    )


@router.get(
    "/verify",
    response_model=AuditVerifyOut,
    summary="Verify the hash chain and its signed checkpoints (AUD-3)",
)
def verify(platform: PlatformDep, auditor: Verifier, request: Request) -> AuditVerifyOut:
    report = platform.audit.verify(platform.db)
    first = report.first_break
    _audit_own_use(
        platform,
        auditor,
        request,
        "audit.verify",
        {
            "records": report.records,
            "first_break": str(first) if first else None,
            "checkpoint_problems": len(report.checkpoint_problems),
        },
        outcome="ok" if report.ok else "failed",
    )
    return _verify_out(report)
