"""/v1/admin: staff accounts, dual control, permission review, behaviour alerts.

Every route needs a staff session holding the permission it names (SEC-4);
every refusal is audited in a transaction of its own and counted for
behaviour monitoring (SEC-8). Mutating routes take an Idempotency-Key —
except issuing credentials, whose answer carries secrets the key store must
never keep (a retry issues new ones, which is harmless).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from tongbao.api.deps import (
    Mutation,
    MutationDep,
    PlatformDep,
    audited,
    audited_run,
    require_permission,
)
from tongbao.auth import Principal
from tongbao.auth.dual_control import OPERATIONS, DualControlRequest, RequestState
from tongbao.auth.monitor import StaffAlert
from tongbao.auth.staff import Offboarding, ReviewLine, StaffMember, review_csv
from tongbao.platform import Platform

router = APIRouter(prefix="/v1/admin", tags=["admin"])

REQUEST_PERMISSIONS = tuple(rule.request_permission for rule in OPERATIONS.values())
APPROVE_PERMISSIONS = tuple(rule.approve_permission for rule in OPERATIONS.values())

StaffManager = Annotated[Principal, Depends(require_permission("staff.manage"))]
Offboarder = Annotated[Principal, Depends(require_permission("staff.offboard"))]
Reviewer = Annotated[Principal, Depends(require_permission("staff.review"))]
AlertViewer = Annotated[Principal, Depends(require_permission("alerts.view"))]
Requester = Annotated[Principal, Depends(require_permission(*REQUEST_PERMISSIONS))]
Approver = Annotated[Principal, Depends(require_permission(*APPROVE_PERMISSIONS))]
Decider = Annotated[
    Principal, Depends(require_permission(*REQUEST_PERMISSIONS, *APPROVE_PERMISSIONS))
]


# --- schemas ---------------------------------------------------------------------


class StaffOut(BaseModel):
    object: str = "staff_member"
    id: str
    username: str
    display_name: str
    status: str
    roles: list[str]
    created_at: datetime
    last_login_at: datetime | None
    locked_until: datetime | None
    left_at: datetime | None
    enrolled: bool


class StaffList(BaseModel):
    object: str = "list"
    data: list[StaffOut]


class StaffCreate(BaseModel):
    username: str = Field(max_length=60)
    display_name: str = Field(max_length=100)


class EnrolmentOut(BaseModel):
    object: str = "staff_enrolment"
    staff_id: str
    username: str
    temporary_password: str = Field(description="Shown once; must be changed at first login")
    totp_secret: str = Field(description="Shown once; enter it in an authenticator app")
    otpauth_uri: str = Field(description="The same secret as an otpauth:// URI (for a QR code)")


class OffboardingOut(BaseModel):
    object: str = "staff_offboarding"
    staff_id: str
    roles_revoked: list[str]
    sessions_ended: int
    tokens_revoked: int
    requests_cancelled: int


class Failure(BaseModel):
    code: str
    detail: str | None


class RequestOut(BaseModel):
    object: str = "dual_control_request"
    id: str
    operation: str
    params: dict[str, Any]
    reason: str
    state: RequestState
    requested_by: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    result: dict[str, Any] | None
    failure: Failure | None


class RequestList(BaseModel):
    object: str = "list"
    data: list[RequestOut]


class RequestCreate(BaseModel):
    operation: str = Field(description=", ".join(OPERATIONS))
    params: dict[str, Any]
    reason: str = Field(max_length=500)


class DecisionBody(BaseModel):
    note: str = Field(default="", max_length=500)


class RoleGrantOut(BaseModel):
    role: str
    granted_at: datetime
    granted_by: str
    request_id: str | None


class ReviewLineOut(BaseModel):
    staff_id: str
    username: str
    display_name: str
    status: str
    roles: list[RoleGrantOut]
    permissions: list[str]
    last_login_at: datetime | None
    flags: list[str]


class ReviewOut(BaseModel):
    object: str = "permission_review"
    generated_at: datetime
    data: list[ReviewLineOut]


class AlertOut(BaseModel):
    object: str = "staff_alert"
    id: str
    staff_id: str
    kind: str
    detail: str
    raised_at: datetime


class AlertList(BaseModel):
    object: str = "list"
    data: list[AlertOut]


def _staff(m: StaffMember) -> StaffOut:
    return StaffOut(
        id=m.id,
        username=m.username,
        display_name=m.display_name,
        status=m.status,
        roles=sorted(m.roles),
        created_at=m.created_at,
        last_login_at=m.last_login_at,
        locked_until=m.locked_until,
        left_at=m.left_at,
        enrolled=m.enrolled,
    )


def _request(r: DualControlRequest) -> RequestOut:
    return RequestOut(
        id=r.id,
        operation=r.operation,
        params=dict(r.params),
        reason=r.reason,
        state=r.state,
        requested_by=r.requested_by,
        created_at=r.created_at,
        expires_at=r.expires_at,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        decision_note=r.decision_note,
        result=dict(r.result) if r.result is not None else None,
        failure=Failure(code=r.failure_code, detail=r.failure_detail) if r.failure_code else None,
    )


def _offboarding(o: Offboarding) -> OffboardingOut:
    return OffboardingOut(
        staff_id=o.staff_id,
        roles_revoked=o.roles_revoked,
        sessions_ended=o.sessions_ended,
        tokens_revoked=o.tokens_revoked,
        requests_cancelled=o.requests_cancelled,
    )


def _review_line(line: ReviewLine) -> ReviewLineOut:
    return ReviewLineOut(
        staff_id=line.staff_id,
        username=line.username,
        display_name=line.display_name,
        status=line.status,
        roles=[
            RoleGrantOut(
                role=g.role,
                granted_at=g.granted_at,
                granted_by=g.granted_by,
                request_id=g.request_id,
            )
            for g in line.roles
        ],
        permissions=line.permissions,
        last_login_at=line.last_login_at,
        flags=line.flags,
    )


def _alert(a: StaffAlert) -> AlertOut:
    return AlertOut(
        id=a.id, staff_id=a.staff_id, kind=a.kind, detail=a.detail, raised_at=a.raised_at
    )


# --- staff ---------------------------------------------------------------------


@router.post("/staff", response_model=StaffOut, status_code=201, summary="Create a staff member")
async def create_staff(
    body: StaffCreate,
    platform: PlatformDep,
    admin: StaffManager,
    mutation: MutationDep,
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        member = platform.staff.create(
            conn, admin, username=body.username, display_name=body.display_name
        )
        return 201, _staff(member)

    return audited_run(mutation, "staff.create", f"username:{body.username}", operation)


@router.get("/staff", response_model=StaffList, summary="Staff members")
async def list_staff(platform: PlatformDep, admin: StaffManager) -> StaffList:
    return StaffList(data=[_staff(m) for m in platform.db.read(platform.staff.members)])


@router.get("/staff/{staff_id}", response_model=StaffOut, summary="One staff member")
async def get_staff(staff_id: str, platform: PlatformDep, admin: StaffManager) -> StaffOut:
    return _staff(platform.db.read(lambda conn: platform.staff.get(conn, staff_id)))


@router.post(
    "/staff/{staff_id}/credentials",
    response_model=EnrolmentOut,
    summary="Issue a temporary password and a new TOTP secret (shown once); unlocks the login",
)
def issue_credentials(
    staff_id: str, request: Request, platform: PlatformDep, admin: StaffManager
) -> Response:
    def answer() -> Response:
        enrolment = platform.db.run(
            lambda conn: platform.staff.issue_credentials(conn, admin, staff_id)
        )
        assert enrolment.password is not None
        out = EnrolmentOut(
            staff_id=enrolment.staff_id,
            username=enrolment.username,
            temporary_password=enrolment.password,
            totp_secret=enrolment.totp_secret,
            otpauth_uri=enrolment.otpauth_uri,
        )
        return Response(
            out.model_dump_json(),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return audited(platform, admin, request, "staff.credentials", f"staff:{staff_id}", answer)


@router.post("/staff/{staff_id}/unlock", response_model=StaffOut, summary="Lift a login lock")
async def unlock(
    staff_id: str,
    platform: PlatformDep,
    admin: StaffManager,
    mutation: MutationDep,
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 200, _staff(platform.staff.unlock(conn, admin, staff_id))

    return audited_run(mutation, "staff.unlock", f"staff:{staff_id}", operation)


@router.delete(
    "/staff/{staff_id}/roles/{role}",
    response_model=StaffOut,
    summary="Revoke a role at once (granting goes through dual control)",
)
async def revoke_role(
    staff_id: str,
    role: str,
    platform: PlatformDep,
    admin: StaffManager,
    mutation: MutationDep,
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        platform.staff.revoke_role(conn, admin, staff_id, role)
        return 200, _staff(platform.staff.get(conn, staff_id))

    return audited_run(mutation, "staff.role_revoke", f"staff:{staff_id}", operation)


@router.post(
    "/staff/{staff_id}/offboard",
    response_model=OffboardingOut,
    summary="Offboard a leaving member: every role, session and token goes at once (SEC-7)",
)
async def offboard(
    staff_id: str,
    platform: PlatformDep,
    admin: Offboarder,
    mutation: MutationDep,
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 200, _offboarding(platform.staff.offboard(conn, admin, staff_id))

    return audited_run(mutation, "staff.offboard", f"staff:{staff_id}", operation)


# --- dual control ------------------------------------------------------------------


@router.post(
    "/requests",
    response_model=RequestOut,
    status_code=201,
    summary="Ask for a dual-controlled operation (SEC-6); another person approves it",
)
async def create_request(
    body: RequestCreate,
    platform: PlatformDep,
    staff: Requester,
    mutation: MutationDep,
) -> Response:
    def operation(conn: Connection) -> tuple[int, BaseModel]:
        created = platform.dual_control.request(
            conn, staff, body.operation, body.params, body.reason
        )
        return 201, _request(created)

    return audited_run(mutation, "dual_control.request", f"operation:{body.operation}", operation)


@router.get("/requests", response_model=RequestList, summary="Dual-control requests, newest first")
async def list_requests(
    platform: PlatformDep,
    staff: Decider,
    state: Annotated[RequestState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> RequestList:
    found = platform.db.read(
        lambda conn: platform.dual_control.search(conn, state=state, limit=limit)
    )
    return RequestList(data=[_request(r) for r in found])


@router.get("/requests/{request_id}", response_model=RequestOut, summary="One request")
async def get_request(request_id: str, platform: PlatformDep, staff: Decider) -> RequestOut:
    return _request(platform.db.read(lambda conn: platform.dual_control.get(conn, request_id)))


def _decide(
    platform: Platform,
    staff: Principal,
    mutation: Mutation,
    request_id: str,
    decision: Literal["approve", "reject"],
    note: str,
) -> Response:
    """Approve or reject a dual-control request, audited on refusal."""
    service = platform.dual_control
    decide = service.approve if decision == "approve" else service.reject

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 200, _request(decide(conn, staff, request_id, note))

    return audited_run(
        mutation, f"dual_control.{decision}", f"dual_control:{request_id}", operation
    )


@router.post(
    "/requests/{request_id}/approve",
    response_model=RequestOut,
    summary="Approve: the operation executes now, exactly once",
)
async def approve_request(
    request_id: str,
    body: DecisionBody,
    platform: PlatformDep,
    staff: Approver,
    mutation: MutationDep,
) -> Response:
    return _decide(platform, staff, mutation, request_id, "approve", body.note)


@router.post(
    "/requests/{request_id}/reject",
    response_model=RequestOut,
    summary="Reject (or, by the requester, withdraw) a pending request",
)
async def reject_request(
    request_id: str,
    body: DecisionBody,
    platform: PlatformDep,
    staff: Decider,
    mutation: MutationDep,
) -> Response:
    return _decide(platform, staff, mutation, request_id, "reject", body.note)


# --- review and alerts ----------------------------------------------------------------


@router.get(
    "/review",
    response_model=ReviewOut,
    summary="Quarterly permission review (SEC-7); `format=csv` for a spreadsheet",
)
async def permission_review(
    platform: PlatformDep,
    staff: Reviewer,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    lines = platform.db.read(platform.staff.review)
    if format == "csv":
        return Response(
            review_csv(lines),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="permission-review.csv"'},
        )
    out = ReviewOut(generated_at=platform.clock.now(), data=[_review_line(x) for x in lines])
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/alerts", response_model=AlertList, summary="Staff behaviour alerts (SEC-8, SEC-9)")
async def alerts(
    platform: PlatformDep,
    staff: AlertViewer,
    staff_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertList:
    found = platform.db.read(
        lambda conn: platform.staff.monitor.alerts(conn, staff_id=staff_id, limit=limit)
    )
    return AlertList(data=[_alert(a) for a in found])
