"""/v1/payments: quote, confirm, verify, cancel, refund, confirm receipt, history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao import errors
from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import (
    CustomerCallDep,
    CustomerMutationDep,
)
from tongbao.api.problems import PROBLEM, TYPE_BASE
from tongbao.money import parse_yuan
from tongbao.payments import (
    Mode,
    PaymentFilter,
    PaymentKind,
    PaymentOrder,
    PaymentRequest,
    PaymentState,
    Scenario,
)
from tongbao.platform import Platform

router = APIRouter(prefix="/v1/payments", tags=["payments"])
PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    "4XX": {"description": "Refused; see `code`.", "content": {PROBLEM: {}}},
}


def _bank_completion(
    platform: Platform, status: int = 200
) -> Callable[[str], tuple[int, BaseModel]]:
    """After commit: send a bank payment's instruction and answer with the outcome."""

    def complete(body: str) -> tuple[int, BaseModel]:
        payment_id = orjson.loads(body)["id"]
        order = platform.payments.submit_to_bank(payment_id)
        return status, platform.db.read(lambda conn: present.payment(platform, conn, order))

    return complete


def _respond(
    platform: Platform, conn: Connection, order: PaymentOrder, status: int = 200
) -> tuple[int, BaseModel]:
    return status, present.payment(platform, conn, order)


@router.post(
    "",
    status_code=201,
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Create a payment (quote), or create and confirm it",
)
async def create_payment(
    body: s.PaymentCreate,
    mutation: CustomerMutationDep,
) -> Response:
    """Without ``confirm`` the payment stays ``created`` and the response is the
    summary the customer confirms: payee, amount, fee (PAY-3)."""
    platform, customer = mutation.platform, mutation.customer
    amount = parse_yuan(body.amount, max_fen=platform.settings.max_amount_fen)
    scenario = None
    if body.scenario is not None:
        if body.scenario not in {known.value for known in Scenario}:
            raise errors.ValidationFailed(f"unknown scenario {body.scenario!r}")
        scenario = Scenario(body.scenario)
    payment_request = PaymentRequest(
        kind=PaymentKind(body.kind),
        amount=amount,
        payee_account_id=body.payee_account_id,
        card_id=body.card_id,
        purpose=body.purpose,
        payee_name=body.payee_name,
        scenario=scenario,
        mode=Mode(body.mode),
        execute_at=body.execute_at,
    )

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        service = platform.payments
        order = (service.pay if body.confirm else service.create)(conn, customer, payment_request)
        return _respond(platform, conn, order, 201)

    complete = (
        _bank_completion(platform, 201)
        if body.confirm and payment_request.kind in (PaymentKind.TOPUP, PaymentKind.WITHDRAWAL)
        else None
    )
    return mutation.run(operation, complete)


@router.post(
    "/{payment_id}/confirm",
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Confirm a quoted payment",
)
async def confirm_payment(
    payment_id: str,
    mutation: CustomerMutationDep,
) -> Response:
    """Reserves the money and, depending on amount and kind, asks for a one-time
    code, queues the payment for review, schedules it, or executes it."""
    platform, customer = mutation.platform, mutation.customer
    kind = platform.db.read(
        lambda conn: platform.payments.get(conn, payment_id, customer_id=customer.id)
    ).kind
    complete = (
        _bank_completion(platform) if kind in (PaymentKind.TOPUP, PaymentKind.WITHDRAWAL) else None
    )
    return mutation.run(
        lambda conn: _respond(
            platform, conn, platform.payments.confirm(conn, customer, payment_id)
        ),
        complete,
    )


@router.post(
    "/{payment_id}/verify",
    response_model=s.Payment,
    responses={
        **PROBLEM_RESPONSES,
        422: {
            "description": "Wrong code (`verification_failed`), with attempts left",
            "content": {PROBLEM: {}},
        },
    },
    summary="Enter the one-time code (PAY-4)",
)
async def verify_payment(
    payment_id: str,
    body: s.VerifyCode,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    kind = platform.db.read(
        lambda conn: platform.payments.get(conn, payment_id, customer_id=customer.id)
    ).kind

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        result = platform.payments.verify(conn, customer, payment_id, body.code)
        payment = present.payment(platform, conn, result.order)
        if result.accepted:
            return 200, payment
        return 422, _VerificationProblem(
            type=TYPE_BASE + "verification_failed",
            title=errors.VerificationFailed.title,
            status=422,
            code="verification_failed",
            detail=(
                f"wrong or expired code; {result.attempts_left} attempts left"
                if result.attempts_left > 0
                else "no attempts left; the payment failed"
            ),
            attempts_left=max(result.attempts_left, 0),
            payment=payment,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
        )

    def complete(text: str) -> tuple[int, BaseModel]:
        data = orjson.loads(text)
        if data.get("code") == "verification_failed":
            return 422, _VerificationProblem.model_validate(data)
        order = platform.payments.submit_to_bank(data["id"])
        return 200, platform.db.read(lambda conn: present.payment(platform, conn, order))

    needs_bank = kind in (PaymentKind.TOPUP, PaymentKind.WITHDRAWAL)
    return mutation.run(operation, complete if needs_bank else None)


class _VerificationProblem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str
    attempts_left: int
    payment: s.Payment
    request_id: str | None = None


@router.post(
    "/{payment_id}/cancel",
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Cancel a payment that has not executed",
)
async def cancel_payment(
    payment_id: str,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    return mutation.run(
        lambda conn: _respond(platform, conn, platform.payments.cancel(conn, customer, payment_id))
    )


@router.post(
    "/{payment_id}/refunds",
    status_code=201,
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Refund a merchant payment (merchants)",
)
async def refund_payment(
    payment_id: str,
    body: s.RefundCreate,
    mutation: CustomerMutationDep,
) -> Response:
    """Full or partial; all refunds together never exceed the payment (PAY-12)."""
    platform, customer = mutation.platform, mutation.customer
    amount = parse_yuan(body.amount, max_fen=platform.settings.max_amount_fen)
    return mutation.run(
        lambda conn: _respond(
            platform,
            conn,
            platform.payments.refund(conn, customer, payment_id, amount, body.reason),
            201,
        )
    )


@router.post(
    "/{payment_id}/acknowledge",
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Accept a succeeded payment (PAY-10)",
)
async def acknowledge_payment(
    payment_id: str,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    return mutation.run(
        lambda conn: _respond(
            platform, conn, platform.payments.acknowledge(conn, customer, payment_id)
        )
    )


@router.post(
    "/{payment_id}/objection",
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="Object to a succeeded payment within the window (PAY-10)",
)
async def object_to_payment(
    payment_id: str,
    body: s.Objection,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    return mutation.run(
        lambda conn: _respond(
            platform, conn, platform.payments.object(conn, customer, payment_id, body.reason)
        )
    )


@router.get(
    "",
    response_model=s.PaymentPage,
    responses=PROBLEM_RESPONSES,
    summary="Payment history (sent and received), newest first",
)
async def list_payments(
    call: CustomerCallDep,
    state: Annotated[PaymentState | None, Query()] = None,
    kind: Annotated[PaymentKind | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> s.PaymentPage:
    platform, customer = call.platform, call.customer
    filters = PaymentFilter(
        state=state, kind=kind, created_from=_aware(created_from), created_to=_aware(created_to)
    )

    def read(conn: Connection) -> s.PaymentPage:
        page = platform.payments.history(
            conn, customer, filters=filters, cursor=cursor, limit=limit
        )
        return s.PaymentPage(
            next_cursor=page.next_cursor,
            data=[present.payment(platform, conn, p) for p in page.items],
        )

    return platform.db.read(read)


@router.get(
    "/{payment_id}",
    response_model=s.Payment,
    responses=PROBLEM_RESPONSES,
    summary="One payment, by id or serial number",
)
async def get_payment(
    payment_id: str,
    call: CustomerCallDep,
    expand: Annotated[list[str] | None, Query(description="`events`")] = None,
) -> s.Payment:
    platform, customer = call.platform, call.customer
    expand_events = "events" in (expand or [])
    return platform.db.read(
        lambda conn: present.payment(
            platform,
            conn,
            platform.payments.get(conn, payment_id, customer_id=customer.id),
            expand_events=expand_events,
        )
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise errors.ValidationFailed("times need a time zone, e.g. 2026-11-23T10:00:00+08:00")
    return value
