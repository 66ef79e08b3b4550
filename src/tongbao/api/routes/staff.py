"""/v1/staff: back-office work — the payment review queue (RISK-5 path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import IdempotencyKey, PlatformDep, RawBody, idempotent, require_staff
from tongbao.auth import Principal
from tongbao.payments import PaymentKind

router = APIRouter(prefix="/v1/staff", tags=["staff"])
Reviewer = Annotated[Principal, Depends(require_staff("reviewer"))]


class ReviewQueue(BaseModel):
    object: str = "list"
    data: list[s.Payment]


@router.get("/reviews", response_model=ReviewQueue, summary="Payments waiting for review")
def review_queue(platform: PlatformDep, reviewer: Reviewer) -> ReviewQueue:
    def read(conn: Connection) -> ReviewQueue:
        return ReviewQueue(
            data=[present.payment(platform, conn, p) for p in platform.payments.review_queue(conn)]
        )

    return platform.db.read(read)


def _decide(
    platform: PlatformDep,
    reviewer: Principal,
    request: Request,
    key: str | None,
    raw: bytes,
    payment_id: str,
    approve: bool,
    note: str,
) -> Response:
    kind = platform.db.read(lambda conn: platform.payments.get(conn, payment_id)).kind

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        service = platform.payments
        order = (service.approve if approve else service.reject)(conn, reviewer, payment_id, note)
        return 200, present.payment(platform, conn, order)

    def complete(_: str) -> tuple[int, BaseModel]:
        order = platform.payments.submit_to_bank(payment_id)
        return 200, platform.db.read(lambda conn: present.payment(platform, conn, order))

    needs_bank = approve and kind in (PaymentKind.TOPUP, PaymentKind.WITHDRAWAL)
    return idempotent(
        platform, reviewer, request, key, raw, operation, complete if needs_bank else None
    )


@router.post(
    "/payments/{payment_id}/approve",
    response_model=s.Payment,
    summary="Approve a payment under review",
)
def approve(
    payment_id: str,
    body: s.ReviewDecision,
    request: Request,
    platform: PlatformDep,
    reviewer: Reviewer,
    raw: RawBody,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return _decide(platform, reviewer, request, idempotency_key, raw, payment_id, True, body.note)


@router.post(
    "/payments/{payment_id}/reject",
    response_model=s.Payment,
    summary="Reject a payment under review; the reserved money is released",
)
def reject(
    payment_id: str,
    body: s.ReviewDecision,
    request: Request,
    platform: PlatformDep,
    reviewer: Reviewer,
    raw: RawBody,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return _decide(platform, reviewer, request, idempotency_key, raw, payment_id, False, body.note)
