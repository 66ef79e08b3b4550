"""/v1/audit/samples: random samples of transactions for internal audit (AUD-5).

The auditor draws a sample, records each sampled transaction's check (ok, or
a problem with its finding and a rectification deadline) and reads the
report, which flags rectifications past their deadline. The business side
(operator, compliance officer) records the rectification. Each route needs
its own permission (SEC-4, :mod:`tongbao.auth.permissions`); the sampling
service refuses the drawer reviewing the sample (``audit_sample_self_review``)
and the audit side recording a rectification
(``audit_sample_self_rectification``), SEC-5. Mutating routes take an
Idempotency-Key; a refusal is audited in a transaction of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import (
    Mutation,
    MutationDep,
    PlatformDep,
    audited_run,
    client_ip,
    require_permission,
)
from tongbao.audit.sampling import SampleItem
from tongbao.auth import Principal

router = APIRouter(prefix="/v1/audit/samples", tags=["audit"])

Drawer = Annotated[Principal, Depends(require_permission("audit.sample.draw"))]
Reviewer = Annotated[Principal, Depends(require_permission("audit.sample.review"))]
Reader = Annotated[Principal, Depends(require_permission("audit.sample.read"))]
Rectifier = Annotated[Principal, Depends(require_permission("audit.sample.rectify"))]
Reporter = Annotated[Principal, Depends(require_permission("audit.sample.report"))]


@router.post(
    "",
    response_model=s.AuditSample,
    status_code=201,
    summary="Draw a random sample of the period's completed transactions (AUD-5)",
)
async def draw_sample(
    body: s.AuditSampleDraw, platform: PlatformDep, auditor: Drawer, mutation: MutationDep
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        sample = platform.audit_sampling.draw_sample(
            conn,
            auditor.actor,
            body.since,
            body.until,
            body.size,
            source_ip=client_ip(mutation.request),
        )
        return 201, present.audit_sample(sample, platform.clock.now())

    return audited_run(mutation, "audit.sample.draw", "audit_sample", operation)


@router.get("", response_model=s.AuditSampleList, summary="The latest samples, newest first")
async def list_samples(
    platform: PlatformDep,
    staff: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> s.AuditSampleList:
    found = platform.db.read(lambda conn: platform.audit_sampling.samples(conn, limit))
    now = platform.clock.now()
    return s.AuditSampleList(data=[present.audit_sample(x, now, with_items=False) for x in found])


@router.get(
    "/{sample_id}", response_model=s.AuditSample, summary="One sample with its transactions"
)
async def get_sample(sample_id: str, platform: PlatformDep, staff: Reader) -> s.AuditSample:
    sample = platform.db.read(lambda conn: platform.audit_sampling.get(conn, sample_id))
    return present.audit_sample(sample, platform.clock.now())


def _change_item(
    mutation: Mutation,
    action: str,
    sample_id: str,
    payment_id: str,
    change: Callable[[Connection], SampleItem],
) -> Response:
    """One sampled transaction's change under its Idempotency-Key; a refusal is audited."""

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        now = mutation.platform.clock.now()
        return 200, present.audit_sample_item(sample_id, change(conn), now)

    target = f"audit_sample:{sample_id}/{payment_id}"
    return audited_run(mutation, action, target, operation)


@router.post(
    "/{sample_id}/items/{payment_id}/result",
    response_model=s.AuditSampleItem,
    summary="Record a sampled transaction's check: ok, or a problem with its finding",
)
async def record_result(
    sample_id: str,
    payment_id: str,
    body: s.AuditSampleResult,
    platform: PlatformDep,
    auditor: Reviewer,
    mutation: MutationDep,
) -> Response:
    ip = client_ip(mutation.request)
    return _change_item(
        mutation,
        "audit.sample.result",
        sample_id,
        payment_id,
        lambda conn: platform.audit_sampling.record_result(
            conn,
            auditor.actor,
            sample_id,
            payment_id,
            body.outcome == "ok",
            body.finding,
            source_ip=ip,
        ),
    )


@router.post(
    "/{sample_id}/items/{payment_id}/rectification",
    response_model=s.AuditSampleItem,
    summary="Record the rectification of a problem (the business side, not the auditor)",
)
async def rectify(
    sample_id: str,
    payment_id: str,
    body: s.AuditRectification,
    platform: PlatformDep,
    staff: Rectifier,
    mutation: MutationDep,
) -> Response:
    ip = client_ip(mutation.request)
    return _change_item(
        mutation,
        "audit.sample.rectify",
        sample_id,
        payment_id,
        lambda conn: platform.audit_sampling.rectify(
            conn, staff.actor, sample_id, payment_id, body.note, source_ip=ip
        ),
    )


@router.get(
    "/{sample_id}/report",
    response_model=s.AuditSampleReport,
    summary="The audit report: counts, problems by deadline, overdue rectifications flagged",
)
async def sample_report(
    sample_id: str, platform: PlatformDep, staff: Reporter
) -> s.AuditSampleReport:
    report = platform.db.read(lambda conn: platform.audit_sampling.report(conn, sample_id))
    return present.audit_sample_report(report)
