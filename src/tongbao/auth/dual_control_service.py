"""Dual-control requests: store, decide, execute exactly once (SEC-6).

Exactly once: :meth:`DualControl.approve` locks the request row (``SELECT …
FOR UPDATE`` on PostgreSQL; SQLite's single writer serialises anyway), moves
it out of ``pending`` with a guarded ``UPDATE … WHERE state = 'pending'`` and
executes the operation in the same transaction. A second approver waits for
the lock, then finds the request decided and is refused; a crash before
commit leaves the request pending and nothing executed.

An operation refused while executing (funds short, a role conflict that
arose since the request) is rolled back to a savepoint and the request ends
``failed`` with the refusal's code — the approval is still on record.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tongbao import errors
from tongbao.audit import AuditLog
from tongbao.auth import tables as t
from tongbao.auth.dual_control import (
    DualControlRequest,
    RequestState,
    check_decision,
    check_request,
    normalise_params,
)
from tongbao.auth.model import Principal
from tongbao.auth.staff import StaffService
from tongbao.clock import Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.ledger import AccountType, Ledger
from tongbao.ledger.model import transfer_postings
from tongbao.ops import PolicySettings

CUSTOMER_ACCOUNTS = (AccountType.CUSTOMER_WALLET, AccountType.MERCHANT)


class DualControl:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        staff: StaffService,
        ledger: Ledger,
        policies: PolicySettings,
        audit: AuditLog,
        suspense_code: str,
    ) -> None:
        self.settings = settings
        self.suspense_code = suspense_code  # the internal account adjustments book against
        self.clock = clock
        self.staff = staff
        self.ledger = ledger
        self.policies = policies
        self.audit = audit

    def request(
        self,
        conn: Connection,
        requester: Principal,
        operation: str,
        params: dict[str, Any],
        reason: str,
    ) -> DualControlRequest:
        """Ask for ``operation``; it runs only when somebody else approves it."""
        check_request(requester, operation, reason)
        normalised = normalise_params(operation, params, max_fen=self.settings.max_amount_fen)
        self._precheck(conn, operation, normalised)
        now = self.clock.now()
        request = DualControlRequest(
            id=new_id("dcr"),
            operation=operation,
            params=normalised,
            reason=reason.strip(),
            state=RequestState.PENDING,
            requested_by=requester.id,
            created_at=now,
            expires_at=now + timedelta(hours=self.settings.dual_control_ttl_hours),
        )
        conn.execute(
            insert(t.dual_control_requests),
            {
                "id": request.id,
                "operation": operation,
                "params": _json(normalised),
                "reason": request.reason,
                "state": request.state.value,
                "requested_by": requester.id,
                "created_at": now,
                "expires_at": request.expires_at,
            },
        )
        self.audit.record(
            conn,
            actor=requester.actor,
            action="dual_control.request",
            target=f"dual_control:{request.id}",
            after={"operation": operation, "params": normalised},
            details={"reason": request.reason},
        )
        return request

    def approve(
        self, conn: Connection, approver: Principal, request_id: str, note: str = ""
    ) -> DualControlRequest:
        """Approve and execute, exactly once; see the module docstring."""
        request = self.get(conn, request_id, for_update=True)
        check_decision(request, approver, self.clock.now(), approving=True)
        self._decide(conn, request, RequestState.EXECUTED, approver, note)
        details: dict[str, Any]
        try:
            with conn.begin_nested():
                result = self._execute(conn, request, approver)
        except errors.TongbaoError as exc:
            conn.execute(
                update(t.dual_control_requests)
                .where(t.dual_control_requests.c.id == request_id)
                .values(
                    state=RequestState.FAILED.value,
                    failure_code=exc.code,
                    failure_detail=exc.detail[:500],
                )
            )
            outcome, details = "failed", {"code": exc.code, "detail": exc.detail}
        else:
            conn.execute(
                update(t.dual_control_requests)
                .where(t.dual_control_requests.c.id == request_id)
                .values(result=_json(result))
            )
            outcome, details = "ok", {"result": result}
        self.audit.record(
            conn,
            actor=approver.actor,
            action="dual_control.approve",
            target=f"dual_control:{request_id}",
            outcome=outcome,
            details={"operation": request.operation, "note": note, **details},
        )
        return self.get(conn, request_id)

    def reject(
        self, conn: Connection, decider: Principal, request_id: str, reason: str
    ) -> DualControlRequest:
        """Refuse (or, by its requester, withdraw) a pending request; nothing runs."""
        request = self.get(conn, request_id, for_update=True)
        check_decision(request, decider, self.clock.now(), approving=False)
        self._decide(conn, request, RequestState.REJECTED, decider, reason)
        self.audit.record(
            conn,
            actor=decider.actor,
            action="dual_control.reject",
            target=f"dual_control:{request_id}",
            details={"operation": request.operation, "reason": reason},
        )
        return self.get(conn, request_id)

    def get(
        self, conn: Connection, request_id: str, *, for_update: bool = False
    ) -> DualControlRequest:
        d = t.dual_control_requests
        query = select(d).where(d.c.id == request_id)
        row = conn.execute(query.with_for_update() if for_update else query).first()
        if row is None:
            raise errors.DualControlNotFound(f"no dual-control request {request_id}")
        return _request(row._mapping)

    def search(
        self, conn: Connection, *, state: RequestState | None = None, limit: int = 100
    ) -> list[DualControlRequest]:
        """Requests, newest first."""
        d = t.dual_control_requests
        query = select(d).order_by(d.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(d.c.state == state.value)
        return [_request(r._mapping) for r in conn.execute(query)]

    def expire_due(self, conn: Connection) -> int:
        """Mark pending requests past their time as expired (the background tick)."""
        d = t.dual_control_requests
        now = self.clock.now()
        return int(
            conn.execute(
                update(d)
                .where(d.c.state == RequestState.PENDING.value, d.c.expires_at <= now)
                .values(state=RequestState.EXPIRED.value, decided_at=now)
            ).rowcount
        )

    # ------------------------------------------------------------------ internals

    def _decide(
        self,
        conn: Connection,
        request: DualControlRequest,
        to: RequestState,
        decider: Principal,
        note: str,
    ) -> None:
        """Move a request :func:`check_decision` found pending to ``to``; the
        guarded update refuses if another decision got there first."""
        d = t.dual_control_requests
        claimed = conn.execute(
            update(d)
            .where(d.c.id == request.id, d.c.state == RequestState.PENDING.value)
            .values(
                state=to.value,
                decided_by=decider.id,
                decided_at=self.clock.now(),
                decision_note=note[:500] or None,
            )
        ).rowcount
        if claimed != 1:  # decided meanwhile by someone else
            raise errors.DualControlDecided("the request was decided meanwhile")

    def _precheck(self, conn: Connection, operation: str, params: dict[str, Any]) -> None:
        """Refuse at request time what could never execute."""
        if operation == "funds.adjust":
            self._customer_account(conn, params["account_id"])
        elif operation == "roles.grant":
            self.staff.check_grant(conn, params["staff_id"], params["role"])

    def _customer_account(self, conn: Connection, account_id: str) -> str:
        account = self.ledger.account(conn, account_id)
        if account.type not in CUSTOMER_ACCOUNTS:
            raise errors.ValidationFailed(
                "fund adjustments move money to or from a customer wallet or merchant account"
            )
        return account.id

    def _execute(
        self, conn: Connection, request: DualControlRequest, approver: Principal
    ) -> dict[str, Any]:
        p = request.params
        if request.operation == "funds.adjust":
            customer = self._customer_account(conn, p["account_id"])
            suspense = self.ledger.account_id_by_code(conn, self.suspense_code)
            debit, credit = (
                (suspense, customer) if p["direction"] == "credit" else (customer, suspense)
            )
            entry = self.ledger.transfer(
                conn,
                transfer_postings(debit, credit, p["amount_fen"]),
                reference=request.id,
                description=f"fund adjustment: {request.reason}"[:200],
            )
            return {"entry_id": entry.id}
        if request.operation == "roles.grant":
            grant = self.staff.assign_role(
                conn, approver, p["staff_id"], p["role"], request_id=request.id
            )
            return {"staff_id": grant.staff_id, "role": grant.role}
        version = self.policies.write(
            conn,
            key=p["key"],
            value=p["value"],
            changed_by=f"staff:{request.requested_by}",
            approved_by=approver.actor,
            request_id=request.id,
        )
        return {"key": version.key, "version": version.version}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _request(r: Any) -> DualControlRequest:
    return DualControlRequest(
        id=r["id"],
        operation=r["operation"],
        params=json.loads(r["params"]),
        reason=r["reason"],
        state=RequestState(r["state"]),
        requested_by=r["requested_by"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        decided_by=r["decided_by"],
        decided_at=r["decided_at"],
        decision_note=r["decision_note"],
        result=json.loads(r["result"]) if r["result"] else None,
        failure_code=r["failure_code"],
        failure_detail=r["failure_detail"],
    )
