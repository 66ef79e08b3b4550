"""/v1/staff: staff login (SEC-13) and back-office work — the payment review queue.

Login and password change do not go through the Idempotency-Key store: it
would keep a fingerprint of the password (and the session token) it must
never hold. Retrying a login simply logs in again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import (
    Mutation,
    MutationDep,
    PlatformDep,
    StaffSessionDep,
    bearer_credentials,
    client_ip,
    require_permission,
)
from tongbao.auth import Principal
from tongbao.payments import PaymentKind
from tongbao.platform import Platform

router = APIRouter(prefix="/v1/staff", tags=["staff"])
Reviewer = Annotated[Principal, Depends(require_permission("payments.review"))]


class LoginBody(BaseModel):
    username: str = Field(max_length=60)
    password: str = Field(max_length=200)
    totp: str = Field(max_length=10, description="The 6-digit code of the authenticator app")


class SessionOut(BaseModel):
    object: str = "staff_session"
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown once")
    staff_id: str
    expires_at: datetime = Field(description="The latest end; idle_minutes without use end it")
    idle_minutes: int
    password_expired: bool = Field(
        description="AUTH-6: only POST /v1/staff/password works until the password is changed"
    )


class PasswordBody(BaseModel):
    current_password: str = Field(max_length=200)
    new_password: str = Field(max_length=200)


class Done(BaseModel):
    object: str
    done: bool = True


class StaffMe(BaseModel):
    object: str = "staff_member"
    id: str
    roles: list[str]
    permissions: list[str]


@router.post(
    "/login",
    response_model=SessionOut,
    summary="Staff login: username, password and TOTP code (SEC-13) → a session token",
)
def login(body: LoginBody, request: Request, platform: PlatformDep) -> SessionOut:
    session = platform.staff.login(
        platform.db,
        username=body.username,
        password=body.password,
        code=body.totp,
        source_ip=client_ip(request),
    )
    return SessionOut(
        token=session.token,
        staff_id=session.staff_id,
        expires_at=session.expires_at,
        idle_minutes=session.idle_minutes,
        password_expired=session.password_expired,
    )


@router.post("/logout", response_model=Done, summary="End this staff session")
async def logout(
    platform: PlatformDep,
    staff: StaffSessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_credentials)],
) -> Done:
    assert credentials is not None  # the session dependency checked it
    platform.db.run(lambda conn: platform.staff.logout(conn, credentials.credentials))
    return Done(object="staff_session")


@router.post(
    "/password",
    response_model=Done,
    summary="Change the own password (AUTH-6); works also when it has expired",
)
def change_password(body: PasswordBody, platform: PlatformDep, staff: StaffSessionDep) -> Done:
    platform.staff.change_password(
        platform.db, staff, current=body.current_password, new=body.new_password
    )
    return Done(object="staff_password")


@router.get("/me", response_model=StaffMe, summary="The signed-in staff member's permissions")
async def me(staff: StaffSessionDep) -> StaffMe:
    return StaffMe(id=staff.id, roles=sorted(staff.roles), permissions=sorted(staff.permissions))


class ReviewQueue(BaseModel):
    object: str = "list"
    data: list[s.Payment]


@router.get("/reviews", response_model=ReviewQueue, summary="Payments waiting for review")
async def review_queue(platform: PlatformDep, reviewer: Reviewer) -> ReviewQueue:
    def read(conn: Connection) -> ReviewQueue:
        return ReviewQueue(
            data=[present.payment(platform, conn, p) for p in platform.payments.review_queue(conn)]
        )

    return platform.db.read(read)


def _decide(
    platform: Platform,
    reviewer: Principal,
    mutation: Mutation,
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
    return mutation.run(operation, complete if needs_bank else None)


@router.post(
    "/payments/{payment_id}/approve",
    response_model=s.Payment,
    summary="Approve a payment under review",
)
async def approve(
    payment_id: str,
    body: s.ReviewDecision,
    platform: PlatformDep,
    reviewer: Reviewer,
    mutation: MutationDep,
) -> Response:
    return _decide(platform, reviewer, mutation, payment_id, True, body.note)


@router.post(
    "/payments/{payment_id}/reject",
    response_model=s.Payment,
    summary="Reject a payment under review; the reserved money is released",
)
async def reject(
    payment_id: str,
    body: s.ReviewDecision,
    platform: PlatformDep,
    reviewer: Reviewer,
    mutation: MutationDep,
) -> Response:
    return _decide(platform, reviewer, mutation, payment_id, False, body.note)
