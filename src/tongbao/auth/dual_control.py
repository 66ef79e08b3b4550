"""Dual control (SEC-6): the request state machine and who may decide. Pure.

A high-value operation is first *requested* by one staff member holding the
operation's ``….request`` permission and runs only when *another* member
holding its ``….approve`` permission approves it — in the approval's
transaction, exactly once::

    pending ──approve──▶ executed      (the operation ran)
       │    └─approve──▶ failed        (it was refused when it ran, e.g. funds short)
       ├─────reject────▶ rejected
       ├─────expiry────▶ expired       (dual_control_ttl_hours without a decision)
       └─────offboard──▶ cancelled     (the requester left, SEC-7)

    >>> rule = operation_rule("funds.adjust")
    >>> rule.request_permission, rule.approve_permission
    ('funds.adjust.request', 'funds.adjust.approve')
    >>> check_transition(RequestState.EXECUTED, RequestState.REJECTED)
    Traceback (most recent call last):
    ...
    tongbao.errors.DualControlDecidedError: dual_control_decided: the request is already executed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tongbao import errors
from tongbao.auth.model import Principal
from tongbao.auth.permissions import parse_role
from tongbao.money import parse_yuan
from tongbao.ops.policies import validate_policy


class RequestState(StrEnum):
    PENDING = "pending"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


_NEXT: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {
            RequestState.EXECUTED,
            RequestState.FAILED,
            RequestState.REJECTED,
            RequestState.EXPIRED,
            RequestState.CANCELLED,
        }
    ),
}


def check_transition(current: RequestState, to: RequestState) -> None:
    if to not in _NEXT.get(current, frozenset()):
        raise errors.DualControlDecided(f"the request is already {current}")


@dataclass(frozen=True, slots=True)
class OperationRule:
    name: str
    description: str

    @property
    def request_permission(self) -> str:
        return f"{self.name}.request"

    @property
    def approve_permission(self) -> str:
        return f"{self.name}.approve"


OPERATIONS: dict[str, OperationRule] = {
    rule.name: rule
    for rule in (
        OperationRule(
            "funds.adjust",
            "move money between a customer account and suspense; params: account_id, "
            'amount (yuan string), direction ("credit" the customer or "debit" them)',
        ),
        OperationRule("limits.change", "a new version of a limit; params: key, value"),
        OperationRule(
            "risk_policy.change", "a new version of a risk parameter; params: key, value"
        ),
        OperationRule("config.change", "a new run-time setting; params: key, value"),
        OperationRule("roles.grant", "grant a role to a staff member; params: staff_id, role"),
    )
}


def operation_rule(name: str) -> OperationRule:
    rule = OPERATIONS.get(name)
    if rule is None:
        raise errors.UnknownOperation(
            f"no dual-control operation {name!r}; operations are: {', '.join(OPERATIONS)}"
        )
    return rule


@dataclass(frozen=True, slots=True)
class DualControlRequest:
    id: str
    operation: str
    params: Mapping[str, Any]
    reason: str
    state: RequestState
    requested_by: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str | None = None
    result: Mapping[str, Any] | None = None
    failure_code: str | None = None
    failure_detail: str | None = None


def check_request(requester: Principal, operation: str, reason: str) -> OperationRule:
    """May ``requester`` ask for ``operation``? (Reason required: the approver decides on it.)"""
    rule = operation_rule(operation)
    if rule.request_permission not in requester.permissions:
        raise errors.PermissionDenied(f"needs the permission {rule.request_permission}")
    if not reason.strip() or len(reason) > 500:
        raise errors.ValidationFailed("a reason of 1 to 500 characters is required")
    return rule


def check_decision(
    request: DualControlRequest, decider: Principal, now: datetime, *, approving: bool
) -> None:
    """May ``decider`` approve (or reject) ``request`` now?

    The requester may withdraw (reject) their own request but never approve it.
    """
    check_transition(request.state, RequestState.EXECUTED)
    if now >= request.expires_at:
        raise errors.DualControlExpired(f"the request expired at {request.expires_at.isoformat()}")
    own = decider.id == request.requested_by
    if own and approving:
        raise errors.SelfApproval("a second person must approve (SEC-6)")
    if (
        approving
        and request.operation == "roles.grant"
        and request.params["staff_id"] == decider.id
    ):
        raise errors.SelfApproval("nobody approves a role grant to themselves (SEC-6)")
    if own:
        return
    permission = operation_rule(request.operation).approve_permission
    if permission not in decider.permissions:
        raise errors.PermissionDenied(f"needs the permission {permission}")


def normalise_params(operation: str, params: object, *, max_fen: int) -> dict[str, Any]:
    """The operation's parameters, checked and in their stored form."""
    operation_rule(operation)
    if not isinstance(params, Mapping):
        raise errors.ValidationFailed("params is a JSON object")
    if operation == "funds.adjust":
        _only(params, {"account_id", "amount", "direction"})
        account_id, direction = params.get("account_id"), params.get("direction")
        if not isinstance(account_id, str) or not account_id:
            raise errors.ValidationFailed("params.account_id is the customer account to adjust")
        if direction not in ("credit", "debit"):
            raise errors.ValidationFailed('params.direction is "credit" or "debit"')
        amount = parse_yuan(params.get("amount"), max_fen=max_fen)
        return {"account_id": account_id, "amount_fen": amount, "direction": direction}
    if operation == "roles.grant":
        _only(params, {"staff_id", "role"})
        staff_id, role = params.get("staff_id"), params.get("role")
        if not isinstance(staff_id, str) or not staff_id:
            raise errors.ValidationFailed("params.staff_id is the staff member to grant to")
        if not isinstance(role, str):
            raise errors.ValidationFailed("params.role is a role name")
        return {"staff_id": staff_id, "role": parse_role(role).value}
    _only(params, {"key", "value"})
    if "value" not in params:
        raise errors.ValidationFailed("params.value is required")
    key, value = validate_policy(operation, params.get("key"), params["value"])
    return {"key": key, "value": value}


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise errors.ValidationFailed(
            f"unexpected params {sorted(extra)}; expected {sorted(allowed)}"
        )
