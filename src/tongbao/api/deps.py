"""Dependencies shared by the routes: the platform, the caller, idempotency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao import errors
from tongbao.auth import Principal, PrincipalType
from tongbao.auth.model import SESSION_PREFIX
from tongbao.customers import Customer
from tongbao.idempotency import check_key, request_hash
from tongbao.platform import Platform

_bearer = HTTPBearer(
    auto_error=False,
    description="A customer API token, `tbk_…`, or a staff session token, `tbs_…` "
    "(POST /v1/staff/login).",
)


bearer_credentials = _bearer

# Dependencies and routes are ``async`` and call the services directly, on the
# event loop: see "Threading model" in :mod:`tongbao.api.app`.


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


@dataclass(frozen=True, slots=True)
class Caller:
    platform: Platform
    principal: Principal
    customer: Customer | None


# Few dependencies per route: FastAPI spends about 40 µs of CPU solving each
# one on every request, more than the database needs for a statement. So the
# caller is read once, with the platform it came through, and the customer
# routes take one dependency (``CustomerCallDep`` or ``CustomerMutationDep``).


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who is calling — token and, for customers, their record — in one read."""
    platform: Platform = request.app.state.platform
    token = credentials.credentials if credentials else None

    def read(conn: Connection) -> Caller:
        principal = platform.auth.authenticate(conn, token)
        customer = None
        if principal.type is PrincipalType.CUSTOMER:
            customer = platform.customers.get(conn, principal.id)
        return Caller(platform, principal, customer)

    # A staff session's idle timer is refreshed as it is used: a write.
    if token and token.startswith(SESSION_PREFIX):
        return platform.db.run(read)
    return platform.db.read(read)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_principal(caller: CallerDep) -> Principal:
    return caller.principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _customer_of(caller: Caller) -> Customer:
    if caller.customer is None:
        raise errors.Forbidden("this endpoint is for customers")
    return caller.customer


async def get_customer(caller: CallerDep) -> Customer:
    return _customer_of(caller)


CustomerDep = Annotated[Customer, Depends(get_customer)]


@dataclass(frozen=True, slots=True)
class CustomerCall:
    """A customer's read-only call: the platform and the calling customer."""

    platform: Platform
    customer: Customer


async def get_customer_call(caller: CallerDep) -> CustomerCall:
    return CustomerCall(caller.platform, _customer_of(caller))


CustomerCallDep = Annotated[CustomerCall, Depends(get_customer_call)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def require_permission(*permissions: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting staff holding one of ``permissions`` (SEC-4).

    A customer gets 403 ``forbidden``; a staff member without the permission
    403 ``permission_denied``, and the refusal is audited and counted for
    behaviour monitoring (SEC-8). An admitted use is remembered, so a use out
    of the member's pattern raises an alert.
    """
    wanted = frozenset(permissions)

    async def check(principal: PrincipalDep, platform: PlatformDep, request: Request) -> Principal:
        if principal.type is not PrincipalType.STAFF:
            raise errors.Forbidden("this endpoint is for staff")
        held = principal.permissions & wanted
        if not held:
            refusal = errors.PermissionDenied(f"needs the permission {' or '.join(sorted(wanted))}")
            platform.staff.record_refusal(
                platform.db,
                principal,
                action="permission.check",
                target=f"{request.method} {request.url.path}",
                error=refusal,
                source_ip=client_ip(request),
            )
            raise refusal
        if len(wanted) == 1:  # with a choice, the service names the one it used
            platform.staff.permission_used(platform.db, principal, next(iter(wanted)))
        return principal

    check.required_permissions = wanted  # type: ignore[attr-defined] # read by the route walk
    return check


async def get_staff_session(
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Any staff member with a live session, also with an expired password
    (for changing it and logging out)."""
    token = credentials.credentials if credentials else None
    if token and token.startswith(SESSION_PREFIX):
        return platform.db.run(
            lambda conn: platform.staff.authenticate_session(
                conn, token, allow_expired_password=True
            )
        )
    principal = platform.db.read(lambda conn: platform.auth.authenticate(conn, token))
    raise errors.Forbidden(f"this endpoint is for staff, not {principal.type} credentials")


StaffSessionDep = Annotated[Principal, Depends(get_staff_session)]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required on every mutating call; a retry with the same key "
        "returns the first result and has no second effect.",
    ),
]


@dataclass(frozen=True, slots=True)
class Mutation:
    """A mutating call, ready to run under the caller's Idempotency-Key."""

    platform: Platform
    principal: Principal
    request: Request
    key: str | None
    body: bytes

    def run(
        self,
        operation: Callable[[Connection], tuple[int, BaseModel]],
        complete: Callable[[str], tuple[int, BaseModel]] | None = None,
        *,
        discard_on_refusal: bool = False,
    ) -> Response:
        """Run ``operation`` (then, after commit, ``complete``) once per key and
        answer with its result; a retry with the same key replays that answer."""
        key = check_key(self.key)
        method, path = self.request.method, self.request.url.path

        def run(conn: Connection) -> tuple[int, str]:
            status, model = operation(conn)
            return status, model.model_dump_json()

        def finish(body_text: str) -> tuple[int, str]:
            assert complete is not None
            status, model = complete(body_text)
            return status, model.model_dump_json()

        outcome = self.platform.idempotency.run(
            principal_id=self.principal.actor,
            key=key,
            method=method,
            path=path,
            fingerprint=request_hash(method, path, self.body),
            operation=run,
            complete=finish if complete else None,
            discard_on_refusal=discard_on_refusal,
        )
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        media = "application/problem+json" if outcome.status_code >= 400 else "application/json"
        return Response(
            outcome.body, status_code=outcome.status_code, media_type=media, headers=headers
        )


async def get_mutation(request: Request, caller: CallerDep, key: IdempotencyKey = None) -> Mutation:
    return Mutation(caller.platform, caller.principal, request, key, await request.body())


MutationDep = Annotated[Mutation, Depends(get_mutation)]


@dataclass(frozen=True, slots=True)
class CustomerMutation(Mutation):
    """A customer's mutating call; ``customer`` is the caller."""

    customer: Customer


async def get_customer_mutation(
    request: Request, caller: CallerDep, key: IdempotencyKey = None
) -> CustomerMutation:
    customer = _customer_of(caller)
    body = await request.body()
    return CustomerMutation(caller.platform, caller.principal, request, key, body, customer)


CustomerMutationDep = Annotated[CustomerMutation, Depends(get_customer_mutation)]


def audited(
    platform: Platform,
    principal: Principal,
    request: Request,
    action: str,
    target: str,
    answer: Callable[[], Response],
) -> Response:
    """Run a mutating staff call; a refusal is audited in a transaction of its
    own (the call's rolled back) and counted for behaviour monitoring (SEC-8)."""
    try:
        return answer()
    except errors.TongbaoError as exc:
        platform.staff.record_refusal(
            platform.db,
            principal,
            action=action,
            target=target,
            error=exc,
            source_ip=client_ip(request),
        )
        raise


def audited_run(
    mutation: Mutation,
    action: str,
    target: str,
    operation: Callable[[Connection], tuple[int, BaseModel]],
) -> Response:
    """Run a mutating staff call under its Idempotency-Key; a refusal is audited."""
    return audited(
        mutation.platform,
        mutation.principal,
        mutation.request,
        action,
        target,
        lambda: mutation.run(operation),
    )
