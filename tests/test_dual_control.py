"""Dual control on both engines (SEC-6): a high-value operation runs only
when a second authorised person approves it — in the approval's
transaction, exactly once, also when approvers race — and never when the
request is rejected, expired, decided or approved by its own requester."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text

from tongbao import errors
from tongbao.auth import DualControlRequest, Principal
from tongbao.clock import ManualClock
from tongbao.customers import CustomerKind
from tongbao.ledger import Posting
from tongbao.platform import Platform

from .staff_helpers import new_staff, principal, staff_session


@pytest.fixture
def wallet(platform: Platform) -> str:
    """A customer wallet holding 100.00 yuan (moved in from suspense by a seed entry)."""

    def open_wallet(conn: Connection) -> str:
        customer = platform.customers.register(
            conn, kind=CustomerKind.PERSON, name="郑七", phone="13700137000"
        )
        return customer.account_id

    account = platform.db.run(open_wallet)
    request = ask(platform, staff_session(platform, ["operator"]), "credit", "100.00", account)
    approve(platform, staff_session(platform, ["reviewer"]), request.id)
    return account


def me(platform: Platform, token: str) -> Principal:
    return principal(platform, token)


def ask(
    platform: Platform, token: str, direction: str, amount: str, account: str
) -> DualControlRequest:
    params = {"account_id": account, "amount": amount, "direction": direction}
    who = me(platform, token)
    return platform.db.run(
        lambda conn: platform.dual_control.request(
            conn, who, "funds.adjust", params, "对账差错调整"
        )
    )


def approve(platform: Platform, token: str, request_id: str) -> DualControlRequest:
    who = me(platform, token)
    return platform.db.run(lambda conn: platform.dual_control.approve(conn, who, request_id, "ok"))


def balance(platform: Platform, account: str) -> int:
    return platform.db.read(lambda conn: platform.ledger.balance(conn, account)).ledger


def entries(platform: Platform, reference: str) -> list[Any]:
    return platform.db.read(lambda conn: platform.ledger.entries_for(conn, reference))


def test_a_fund_adjustment_runs_only_after_a_second_person_approves(
    platform: Platform, wallet: str
) -> None:
    """SEC-6: requested by an operator, approved by a reviewer; one balanced
    entry referencing the request moves the money between wallet and suspense."""
    operator, reviewer = (
        staff_session(platform, ["operator"]),
        staff_session(platform, ["reviewer"]),
    )
    request = ask(platform, operator, "debit", "30.00", wallet)
    assert request.state == "pending"
    assert balance(platform, wallet) == 10_000 and entries(platform, request.id) == []
    done = approve(platform, reviewer, request.id)
    assert done.state == "executed" and done.decided_by == me(platform, reviewer).id
    assert balance(platform, wallet) == 7_000
    [entry] = entries(platform, request.id)
    assert done.result == {"entry_id": entry.id}
    assert {p.account_id: p.amount for p in entry.postings}[wallet] == Posting.debit(
        wallet, 3_000
    ).amount
    assert sum(p.amount for p in entry.postings) == 0
    with pytest.raises(errors.DualControlDecided):
        approve(platform, staff_session(platform, ["reviewer"]), request.id)
    assert len(entries(platform, request.id)) == 1


def test_nobody_approves_their_own_request_or_without_the_permission(
    platform: Platform, wallet: str
) -> None:
    """SEC-6: refusals change nothing; the request stays pending."""
    operator = staff_session(platform, ["operator"])
    request = ask(platform, operator, "credit", "1.00", wallet)
    with pytest.raises(errors.SelfApproval):
        approve(platform, operator, request.id)
    for roles in (["operator"], ["administrator"], ["risk_officer"], ["auditor"]):
        with pytest.raises(errors.PermissionDenied):
            approve(platform, staff_session(platform, roles), request.id)
    with pytest.raises(errors.PermissionDenied):
        ask(platform, staff_session(platform, ["reviewer"]), "credit", "1.00", wallet)
    current = platform.db.read(lambda conn: platform.dual_control.get(conn, request.id))
    assert current.state == "pending" and entries(platform, request.id) == []
    assert balance(platform, wallet) == 10_000


def test_bad_requests_are_refused_up_front(platform: Platform, wallet: str) -> None:
    operator = staff_session(platform, ["operator"])
    for account, amount, refusal in (
        ("acct_NOPE", "1.00", errors.AccountNotFound),
        (wallet, "1.234", errors.InvalidAmount),
        (wallet, "0", errors.InvalidAmount),
    ):
        with pytest.raises(refusal):
            ask(platform, operator, "credit", amount, account)
    suspense = platform.db.read(lambda conn: platform.ledger.account_id_by_code(conn, "suspense"))
    with pytest.raises(errors.ValidationFailed):
        ask(platform, operator, "credit", "1.00", suspense)
    assert platform.db.read(platform.dual_control.search) != []  # only the fixture's
    assert len(platform.db.read(platform.dual_control.search)) == 1


def test_a_request_expires_unapproved(platform: Platform, wallet: str, clock: ManualClock) -> None:
    """SEC-6: dual_control_ttl_hours (24) without a decision; the tick marks it."""
    request = ask(platform, staff_session(platform, ["operator"]), "credit", "5.00", wallet)
    reviewer = me(platform, staff_session(platform, ["reviewer"]))
    clock.advance(timedelta(hours=24))
    with pytest.raises(errors.DualControlExpired):
        platform.db.run(lambda conn: platform.dual_control.approve(conn, reviewer, request.id))
    assert platform.tick()["dual_control_expired"] == 1
    assert platform.db.read(lambda conn: platform.dual_control.get(conn, request.id)).state == (
        "expired"
    )
    assert entries(platform, request.id) == [] and balance(platform, wallet) == 10_000


def test_a_rejected_request_never_runs(platform: Platform, wallet: str) -> None:
    request = ask(platform, staff_session(platform, ["operator"]), "credit", "5.00", wallet)
    reviewer = me(platform, staff_session(platform, ["reviewer"]))
    rejected = platform.db.run(
        lambda conn: platform.dual_control.reject(conn, reviewer, request.id, "no ticket")
    )
    assert rejected.state == "rejected" and rejected.decision_note == "no ticket"
    with pytest.raises(errors.DualControlDecided):
        approve(platform, staff_session(platform, ["reviewer"]), request.id)
    assert entries(platform, request.id) == []


def test_an_approved_operation_that_cannot_run_ends_failed(platform: Platform, wallet: str) -> None:
    """Approval is on record; the refused execution left no trace in the ledger."""
    request = ask(platform, staff_session(platform, ["operator"]), "debit", "100.01", wallet)
    done = approve(platform, staff_session(platform, ["reviewer"]), request.id)
    assert done.state == "failed" and done.failure_code == "insufficient_funds"
    assert entries(platform, request.id) == [] and balance(platform, wallet) == 10_000


def test_racing_approvers_execute_the_operation_exactly_once(
    platform: Platform, wallet: str
) -> None:
    """SEC-6: two approvers at the same instant — one execution, one refusal."""
    request = ask(platform, staff_session(platform, ["operator"]), "debit", "10.00", wallet)
    approvers = [me(platform, staff_session(platform, ["reviewer"])) for _ in range(4)]
    barrier = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def run(who: Principal) -> None:
        barrier.wait()
        try:
            platform.db.run(lambda conn: platform.dual_control.approve(conn, who, request.id))
            outcomes.append("executed")
        except errors.DualControlDecided:
            outcomes.append("decided")

    threads = [threading.Thread(target=run, args=(who,)) for who in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["decided", "decided", "decided", "executed"]
    assert len(entries(platform, request.id)) == 1
    assert balance(platform, wallet) == 9_000


def test_policy_changes_write_numbered_versions(platform: Platform) -> None:
    """SEC-6: limits, risk policy and configuration change only through dual
    control; every version stays on record, append-only in the database."""
    risk_a, risk_b = new_staff(platform, ["risk_officer"]), new_staff(platform, ["risk_officer"])
    operator = me(platform, staff_session(platform, ["operator"]))
    compliance = me(platform, staff_session(platform, ["compliance_officer"]))
    admins = [me(platform, staff_session(platform, ["administrator"])) for _ in range(2)]

    def change(who: Principal, operation: str, key: str, value: object) -> DualControlRequest:
        return platform.db.run(
            lambda conn: platform.dual_control.request(
                conn, who, operation, {"key": key, "value": value}, "quarterly policy update"
            )
        )

    def decide(who: Principal, request: DualControlRequest) -> DualControlRequest:
        return platform.db.run(lambda conn: platform.dual_control.approve(conn, who, request.id))

    limit = change(operator, "limits.change", "limits.weak_account_daily_fen", 100_000)
    with pytest.raises(errors.PermissionDenied):  # limits are approved by risk
        decide(compliance, limit)
    assert decide(risk_a.member.principal, limit).result == {
        "key": "limits.weak_account_daily_fen",
        "version": 1,
    }
    again = change(operator, "limits.change", "limits.weak_account_daily_fen", 50_000)
    assert decide(risk_b.member.principal, again).result == {
        "key": "limits.weak_account_daily_fen",
        "version": 2,
    }
    policy = change(risk_a.member.principal, "risk_policy.change", "risk.review_threshold_fen", 1)
    with pytest.raises(errors.PermissionDenied):  # another risk officer is not enough
        decide(risk_b.member.principal, policy)
    decide(compliance, policy)
    config = change(admins[0], "config.change", "config.staff_lockout_minutes", 120)
    decide(admins[1], config)
    with pytest.raises(errors.ValidationFailed):
        change(admins[0], "config.change", "config.database_url", "sqlite://")

    def read(conn: Connection) -> tuple[Any, Any, Any]:
        p = platform.policies
        return (
            p.value(conn, "limits.weak_account_daily_fen"),
            p.history(conn, "limits.weak_account_daily_fen"),
            p.value(conn, "config.staff_lockout_minutes"),
        )

    value, history, lockout = platform.db.read(read)
    assert value == 50_000 and lockout == 120
    assert [(v.version, v.value) for v in history] == [(1, 100_000), (2, 50_000)]
    assert history[1].changed_by == operator.actor
    assert history[1].approved_by == f"staff:{risk_b.id}"
    with pytest.raises(Exception, match="append-only"):
        platform.db.run(lambda conn: conn.execute(text("UPDATE policy_settings SET value = '1'")))

    # An approved configuration change takes effect in running processes at
    # their next tick, and in every process started later.
    assert platform.settings.staff_lockout_minutes == 60
    assert platform.tick()["config_changes_applied"] == 1
    assert platform.settings.staff_lockout_minutes == 120
    fresh = platform.settings.model_copy(update={"staff_lockout_minutes": 60})
    restarted = Platform(fresh, clock=platform.clock).start()
    try:
        assert restarted.settings.staff_lockout_minutes == 120
    finally:
        restarted.close()


def test_roles_are_granted_through_dual_control_and_checked_twice(platform: Platform) -> None:
    """SEC-5 + SEC-6: a second administrator approves; a conflict is refused
    at request time, and one that arose meanwhile fails the execution."""
    first, second = (
        me(platform, staff_session(platform, ["administrator"])),
        me(platform, staff_session(platform, ["administrator"])),
    )
    newcomer = new_staff(platform)

    def grant(role: str) -> DualControlRequest:
        return platform.db.run(
            lambda conn: platform.dual_control.request(
                conn, first, "roles.grant", {"staff_id": newcomer.id, "role": role}, "new hire"
            )
        )

    def decide(request: DualControlRequest) -> DualControlRequest:
        return platform.db.run(lambda conn: platform.dual_control.approve(conn, second, request.id))

    as_operator, as_reviewer = grant("operator"), grant("reviewer")
    assert decide(as_operator).state == "executed"
    failed = decide(as_reviewer)  # the operator grant came first: now a conflict
    assert (failed.state, failed.failure_code) == ("failed", "role_conflict")
    with pytest.raises(errors.RoleConflict):
        grant("auditor")
    with pytest.raises(errors.UnknownRole):
        grant("root")
    roles = platform.db.read(lambda conn: platform.staff.roles(conn, newcomer.id))
    assert [(g.role, g.granted_by, g.request_id) for g in roles] == [
        ("operator", second.actor, as_operator.id)
    ]
    # The approver may not be the one who gains the role.
    own = platform.db.run(
        lambda conn: platform.dual_control.request(
            conn,
            first,
            "roles.grant",
            {"staff_id": second.id, "role": "compliance_officer"},
            "cover for leave",
        )
    )
    with pytest.raises(errors.SelfApproval):
        decide(own)
