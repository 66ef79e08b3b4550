"""Staff login and the /v1/admin API as staff use it: two-factor login
(SEC-13, AUTH-3), first-login password change (AUTH-6), enrolment, role
grants by dual control (SEC-6), offboarding (SEC-7), permission review,
behaviour alerts (SEC-8) and audited refusals."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient

from tongbao.audit.model import AuditQuery
from tongbao.clock import ManualClock
from tongbao.customers import CustomerKind
from tongbao.platform import Platform

from .api_helpers import Api, assert_problem, new_key
from .staff_helpers import PASSWORD, StaffLogin, new_staff, staff_session, totp

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def client(platform: Platform) -> TestClient:
    from tongbao.api.app import create_app  # noqa: PLC0415

    return TestClient(create_app(platform))


def login_body(platform: Platform, who: StaffLogin, password: str = PASSWORD) -> dict[str, str]:
    return {"username": who.username, "password": password, "totp": totp(platform, who)}


def as_staff(client: TestClient, platform: Platform, roles: list[str]) -> Api:
    return Api(client, staff_session(platform, roles))


def test_staff_log_in_with_password_and_code_and_out_again(
    platform: Platform, client: TestClient, clock: ManualClock
) -> None:
    """SEC-13; AUTH-3 over HTTP: wrong attempts 401, the third 423."""
    wang = new_staff(platform, ["reviewer"])
    response = client.post("/v1/staff/login", json=login_body(platform, wang))
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["token"].startswith("tbs_") and session["password_expired"] is False
    api = Api(client, session["token"])
    me = api.ok(api.get("/v1/staff/me"))
    assert me["id"] == wang.id and "payments.review" in me["permissions"]
    assert api.ok(api.post("/v1/staff/logout"))["done"] is True
    assert_problem(api.get("/v1/staff/me"), 401, "unauthenticated")

    clock.advance(timedelta(seconds=30))
    wrong = {**login_body(platform, wang), "password": "Not-The-Passw0rd"}
    assert_problem(client.post("/v1/staff/login", json=wrong), 401, "invalid_credentials")
    assert_problem(client.post("/v1/staff/login", json=wrong), 401, "invalid_credentials")
    assert_problem(client.post("/v1/staff/login", json=wrong), 423, "login_locked")
    locked = client.post("/v1/staff/login", json=login_body(platform, wang))
    assert_problem(locked, 423, "login_locked")


def test_a_newcomer_is_enrolled_granted_a_role_by_two_administrators_and_works(
    platform: Platform, client: TestClient, clock: ManualClock
) -> None:
    """The whole path: create, credentials shown once, forced password change
    (AUTH-6), role grant asked by one administrator and approved by another (SEC-6)."""
    first, second = (
        as_staff(client, platform, ["administrator"]),
        as_staff(client, platform, ["administrator"]),
    )
    created = first.ok(
        first.post("/v1/admin/staff", {"username": "xiaoli", "display_name": "小李"}), 201
    )
    assert created["roles"] == [] and created["enrolled"] is False
    issued = first.client.post(
        f"/v1/admin/staff/{created['id']}/credentials", headers=first.headers(new_key())
    )
    enrolment = first.ok(issued)
    assert issued.headers["cache-control"] == "no-store"
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/Tongbao:xiaoli")

    body = {
        "username": "xiaoli",
        "password": enrolment["temporary_password"],
        "totp": pyotp.TOTP(enrolment["totp_secret"]).at(clock.now()),
    }
    session = client.post("/v1/staff/login", json=body).json()
    assert session["password_expired"] is True
    newcomer = Api(client, session["token"])
    assert_problem(newcomer.get("/v1/staff/reviews"), 403, "password_expired")
    changed = newcomer.post(
        "/v1/staff/password",
        {"current_password": enrolment["temporary_password"], "new_password": "Li-Xiao-2026-Pw"},
    )
    assert newcomer.ok(changed)["done"] is True
    assert_problem(newcomer.get("/v1/staff/reviews"), 403, "permission_denied")

    grant = {"staff_id": created["id"], "role": "reviewer"}
    request = first.ok(
        first.post(
            "/v1/admin/requests",
            {"operation": "roles.grant", "params": grant, "reason": "joins the review team"},
        ),
        201,
    )
    assert request["state"] == "pending"
    assert_problem(
        first.post(f"/v1/admin/requests/{request['id']}/approve", {}), 409, "self_approval"
    )
    key = new_key()
    approved = second.ok(second.post(f"/v1/admin/requests/{request['id']}/approve", {}, key=key))
    assert approved["state"] == "executed" and approved["result"] == grant
    replay = second.post(f"/v1/admin/requests/{request['id']}/approve", {}, key=key)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == approved
    assert newcomer.ok(newcomer.get("/v1/staff/reviews"))["data"] == []
    listed = first.ok(first.get("/v1/admin/requests", state="executed"))["data"]
    assert [r["id"] for r in listed] == [request["id"]]


def test_fund_adjustment_over_the_api(platform: Platform, client: TestClient) -> None:
    """SEC-6: an operator asks, a reviewer approves, the wallet moves once."""
    account = platform.db.run(
        lambda conn: platform.customers.register(conn, kind=CustomerKind.PERSON, name="王五")
    ).account_id
    operator, reviewer = (
        as_staff(client, platform, ["operator"]),
        as_staff(client, platform, ["reviewer"]),
    )
    params = {"account_id": account, "amount": "88.00", "direction": "credit"}
    request = operator.ok(
        operator.post(
            "/v1/admin/requests",
            {"operation": "funds.adjust", "params": params, "reason": "补偿 compensation"},
        ),
        201,
    )
    assert request["params"] == {"account_id": account, "amount_fen": 8800, "direction": "credit"}
    assert_problem(
        operator.post(f"/v1/admin/requests/{request['id']}/approve", {}), 403, "permission_denied"
    )
    done = reviewer.ok(reviewer.post(f"/v1/admin/requests/{request['id']}/approve", {}))
    assert done["state"] == "executed"
    balance = platform.db.read(lambda conn: platform.ledger.balance(conn, account))
    assert balance.ledger == 8800
    assert_problem(
        reviewer.post(f"/v1/admin/requests/{request['id']}/approve", {}),
        409,
        "dual_control_decided",
    )
    assert_problem(
        operator.post(
            "/v1/admin/requests", {"operation": "funds.magic", "params": {}, "reason": "x"}
        ),
        422,
        "unknown_operation",
    )


def test_offboarding_over_the_api_ends_the_session_at_once(
    platform: Platform, client: TestClient
) -> None:
    """SEC-7: the leaver's next call is 401."""
    leaver_token = staff_session(platform, ["reviewer"])
    leaver = Api(client, leaver_token)
    assert leaver.ok(leaver.get("/v1/staff/reviews"))["data"] == []
    leaver_id = leaver.ok(leaver.get("/v1/staff/me"))["id"]
    admin = as_staff(client, platform, ["administrator"])
    result = admin.ok(admin.post(f"/v1/admin/staff/{leaver_id}/offboard"))
    assert result["roles_revoked"] == ["reviewer"] and result["sessions_ended"] == 1
    assert_problem(leaver.get("/v1/staff/reviews"), 401, "unauthenticated")
    assert_problem(admin.post(f"/v1/admin/staff/{leaver_id}/offboard"), 403, "staff_inactive")
    assert admin.ok(admin.get(f"/v1/admin/staff/{leaver_id}"))["status"] == "left"


@sqlite_only
def test_permission_review_and_alerts_for_the_right_roles(
    platform: Platform, client: TestClient
) -> None:
    """SEC-7 review as JSON and CSV; SEC-8 alerts for compliance; refusals
    are audited and counted — five of them raise an alert."""
    compliance = as_staff(client, platform, ["compliance_officer"])
    review = compliance.ok(compliance.get("/v1/admin/review"))
    by_name = {line["username"]: line for line in review["data"]}
    assert len(by_name) == 1
    [line] = by_name.values()
    assert [g["role"] for g in line["roles"]] == ["compliance_officer"]
    response = compliance.get("/v1/admin/review", format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["role"] for r in rows] == ["compliance_officer"]

    nosy = as_staff(client, platform, ["customer_service"])
    for _ in range(5):
        assert_problem(nosy.get("/v1/admin/review"), 403, "permission_denied")
    alerts = compliance.ok(compliance.get("/v1/admin/alerts"))["data"]
    nosy_id = nosy.ok(nosy.get("/v1/staff/me"))["id"]
    assert [(a["staff_id"], a["kind"]) for a in alerts] == [(nosy_id, "repeated_failures")]
    assert_problem(nosy.get("/v1/admin/alerts"), 403, "permission_denied")
    refusals = platform.db.read(
        lambda conn: platform.audit.search(
            conn, AuditQuery(actor=f"staff:{nosy_id}", action="permission.check"), limit=50
        )
    ).items
    assert len(refusals) == 6 and {r.outcome for r in refusals} == {"refused"}
