"""/v1/audit/samples as an internal-audit department uses it, on both engines
(AUD-5): one auditor draws a random sample of the period's completed
transactions, another checks them and raises findings, the business side
records the rectification within a month, and the report flags what is
overdue. Segregation of duties (SEC-5) and permissions (SEC-4) refuse with
their codes and change nothing; the draw is idempotent; every step is in the
tamper-evident audit log (AUD-1, AUD-3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select

from tongbao.api.app import create_app
from tongbao.audit import AuditQuery
from tongbao.audit import tables as t
from tongbao.clock import ManualClock
from tongbao.platform import Platform

from .api_helpers import Api, assert_problem, new_key, row_counts
from .conftest import START
from .payment_helpers import Env
from .staff_helpers import SYSTEM, StaffLogin, login, new_staff, staff_session

SAMPLES = "/v1/audit/samples"
PERIOD = {"since": START.isoformat(), "until": (START + timedelta(days=1)).isoformat()}


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(platform))


@pytest.fixture
def paid(platform: Platform) -> list[str]:
    """Four completed transactions in PERIOD: a top-up and three transfers."""
    env = Env(platform)
    payer, payee = env.person("张三", topup=1_000_000), env.person("李四")
    return [env.transfer(payer, payee, 1_000 + n).id for n in range(3)]


def as_staff(client: TestClient, platform: Platform, *roles: str) -> Api:
    return Api(client, staff_session(platform, roles))


def signed_in(client: TestClient, platform: Platform, who: StaffLogin) -> Api:
    return Api(client, login(platform, who))


def actor(who: StaffLogin) -> str:
    return f"staff:{who.id}"


def sample_rows(platform: Platform) -> list[dict[str, Any]]:
    """Every sample item as stored: what a refusal must leave alone."""

    def read(conn: Connection) -> list[dict[str, Any]]:
        rows = conn.execute(select(t.sample_items).order_by(t.sample_items.c.payment_id))
        return [dict(r._mapping) for r in rows]

    return platform.db.read(read)


def sample_count(platform: Platform) -> int:
    def read(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(t.samples)).scalar_one())

    return platform.db.read(read)


def records(platform: Platform, **query: str) -> list[Any]:
    page = platform.db.read(
        lambda conn: platform.audit.search(conn, AuditQuery(**query), limit=100)
    )
    return list(reversed(page.items))


def draw(auditor: Api, size: int = 3) -> dict[str, Any]:
    body: dict[str, Any] = auditor.ok(auditor.post(SAMPLES, {**PERIOD, "size": size}), 201)
    return body


def item_path(sample: dict[str, Any], payment_id: str, step: str) -> str:
    return f"{SAMPLES}/{sample['id']}/items/{payment_id}/{step}"


def test_draw_check_rectify_and_report_over_http(
    client: TestClient, platform: Platform, clock: ManualClock, paid: list[str]
) -> None:
    """AUD-5: the sample comes from the period's completed transactions and
    records its seed; a problem gets a deadline one month out; past it the
    report flags it overdue; the operator's rectification clears the flag;
    the compliance officer reads the report too."""
    drawer, checker = new_staff(platform, ["auditor"]), new_staff(platform, ["auditor"])
    operator, compliance = (
        new_staff(platform, ["operator"]),
        new_staff(platform, ["compliance_officer"]),
    )
    a, b = signed_in(client, platform, drawer), signed_in(client, platform, checker)

    sample = draw(a, 3)
    assert (sample["population"], sample["size"], sample["drawn_by"]) == (4, 3, actor(drawer))
    assert len(bytes.fromhex(sample["seed"])) == 16
    assert {i["state"] for i in sample["items"]} == {"pending"}
    listed = b.ok(b.get(SAMPLES))["data"]
    assert [(x["id"], x["items"]) for x in listed] == [(sample["id"], None)]
    shown = b.ok(b.get(f"{SAMPLES}/{sample['id']}"))
    assert shown["items"] == sample["items"]

    bad, good, _ = (i["payment_id"] for i in sample["items"])
    found = b.ok(
        b.post(item_path(sample, bad, "result"), {"outcome": "problem", "finding": "缺少审批"})
    )
    assert (found["state"], found["finding"], found["reviewed_by"]) == (
        "problem",
        "缺少审批",
        actor(checker),
    )
    assert found["deadline"].startswith((clock.now() + timedelta(days=30)).isoformat()[:19])
    checked = b.ok(b.post(item_path(sample, good, "result"), {"outcome": "ok"}))
    assert checked["state"] == "ok" and checked["deadline"] is None

    clock.advance(timedelta(days=30, seconds=1))  # sessions have timed out: sign in again
    a, ops = signed_in(client, platform, drawer), signed_in(client, platform, operator)
    report = a.ok(a.get(f"{SAMPLES}/{sample['id']}/report"))
    assert report["counts"] == {"pending": 1, "ok": 1, "problem": 1, "rectified": 0}
    assert [i["payment_id"] for i in report["overdue"]] == [bad]
    assert report["overdue"][0]["overdue"] is True and report["complete"] is False

    fixed = ops.ok(ops.post(item_path(sample, bad, "rectification"), {"note": "已补录审批"}))
    assert (fixed["state"], fixed["rectified_by"], fixed["overdue"]) == (
        "rectified",
        actor(operator),
        False,
    )
    oversight = signed_in(client, platform, compliance)
    report = oversight.ok(oversight.get(f"{SAMPLES}/{sample['id']}/report"))
    assert report["overdue"] == [] and report["counts"]["rectified"] == 1
    (kept,) = report["problems"]
    assert (kept["finding"], kept["rectification"]) == ("缺少审批", "已补录审批")

    # AUD-1: each step by its actor, from the caller's address; the late fix is noted.
    steps = records(platform, keyword=sample["id"])
    assert [(r.actor, r.action) for r in steps] == [
        (actor(drawer), "audit.sample.draw"),
        (actor(checker), "audit.sample.result"),
        (actor(checker), "audit.sample.result"),
        (actor(operator), "audit.sample.rectify"),
    ]
    assert {r.source_ip for r in steps} == {"testclient"}
    assert steps[-1].details_data["late"] is True
    assert not any("审批" in r.details for r in steps)  # findings only as digests
    assert platform.audit.verify(platform.db).ok


def test_the_drawer_may_not_review_and_the_finder_may_not_rectify(
    client: TestClient, platform: Platform, clock: ManualClock, paid: list[str]
) -> None:
    """SEC-5 for AUD-5: 409 with its code, nothing changed, no idempotency key
    kept, the refusal itself audited. A checker later moved to operations
    still may not rectify the finding they raised."""
    drawer, checker = new_staff(platform, ["auditor"]), new_staff(platform, ["auditor"])
    a, b = signed_in(client, platform, drawer), signed_in(client, platform, checker)
    sample = draw(a, 2)
    first = sample["items"][0]["payment_id"]

    before, keys = sample_rows(platform), row_counts(platform, ("idempotency_keys",))
    body = assert_problem(
        a.post(item_path(sample, first, "result"), {"outcome": "ok"}),
        409,
        "audit_sample_self_review",
    )
    assert "drew this sample" in body["detail"]
    assert sample_rows(platform) == before
    assert row_counts(platform, ("idempotency_keys",)) == keys
    (refusal,) = records(platform, action="audit.sample.result")
    assert (refusal.actor, refusal.outcome) == (actor(drawer), "refused")
    assert refusal.details_data["code"] == "audit_sample_self_review"

    b.ok(b.post(item_path(sample, first, "result"), {"outcome": "problem", "finding": "金额不符"}))

    # The checker changes jobs: no longer an auditor, now an operator.
    def move(conn: Connection) -> None:
        platform.staff.revoke_role(conn, SYSTEM, checker.id, "auditor")
        platform.staff.assign_role(conn, SYSTEM, checker.id, "operator")

    platform.db.run(move)
    clock.advance(timedelta(seconds=30))  # a fresh one-time code
    moved = signed_in(client, platform, checker)
    before = sample_rows(platform)
    assert_problem(
        moved.post(item_path(sample, first, "rectification"), {"note": "已更正"}),
        409,
        "audit_sample_self_rectification",
    )
    assert sample_rows(platform) == before
    assert records(platform, action="audit.sample.rectify")[0].outcome == "refused"
    other = as_staff(client, platform, "operator")
    other.ok(other.post(item_path(sample, first, "rectification"), {"note": "已更正"}))
    assert platform.audit.verify(platform.db).ok


def test_each_step_needs_its_own_role(
    client: TestClient, platform: Platform, paid: list[str]
) -> None:
    """SEC-4: operators and compliance officers neither draw nor check; the
    auditor does not rectify; customer service sees no samples; operators get
    no report. Each refusal is 403 permission_denied and writes nothing."""
    auditor = as_staff(client, platform, "auditor")
    sample = draw(auditor, 1)
    payment_id = sample["items"][0]["payment_id"]
    operator = as_staff(client, platform, "operator")
    compliance = as_staff(client, platform, "compliance_officer")
    service = as_staff(client, platform, "customer_service")
    before, count = sample_rows(platform), sample_count(platform)
    for response in (
        operator.post(SAMPLES, {**PERIOD, "size": 1}),
        compliance.post(SAMPLES, {**PERIOD, "size": 1}),
        operator.post(item_path(sample, payment_id, "result"), {"outcome": "ok"}),
        auditor.post(item_path(sample, payment_id, "rectification"), {"note": "x"}),
        service.get(SAMPLES),
        service.get(f"{SAMPLES}/{sample['id']}"),
        operator.get(f"{SAMPLES}/{sample['id']}/report"),
    ):
        assert_problem(response, 403, "permission_denied")
    assert (sample_rows(platform), sample_count(platform)) == (before, count)
    # What the business side needs to act on, it may read.
    assert operator.ok(operator.get(f"{SAMPLES}/{sample['id']}"))["id"] == sample["id"]


def test_a_retried_draw_gives_the_same_sample_once(
    client: TestClient, platform: Platform, paid: list[str]
) -> None:
    """Idempotency: the same key replays the first sample (same seed) without a
    second draw; the key with another body is refused; no key is refused."""
    auditor = as_staff(client, platform, "auditor")
    key = new_key()
    first = auditor.post(SAMPLES, {**PERIOD, "size": 2}, key=key)
    again = auditor.post(SAMPLES, {**PERIOD, "size": 2}, key=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert sample_count(platform) == 1
    assert len(records(platform, action="audit.sample.draw")) == 1
    assert_problem(
        auditor.post(SAMPLES, {**PERIOD, "size": 3}, key=key), 422, "idempotency_key_reused"
    )
    assert_problem(
        auditor.post(SAMPLES, {**PERIOD, "size": 2}, key=None), 400, "idempotency_key_missing"
    )
    assert sample_count(platform) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**PERIOD, "size": 0}, "size"),
        ({**PERIOD, "size": 5}, "exceeds the 4 transactions"),
        ({**PERIOD, "size": "two"}, "size"),
        ({"since": "2026-11-23", "until": "yesterday", "size": 1}, "until"),
        ({"since": "2026-11-23T10:00:00", "until": "2026-11-24T10:00:00", "size": 1}, "time zone"),
        ({"since": PERIOD["until"], "until": PERIOD["since"], "size": 1}, "must end after"),
        ({**PERIOD, "size": 1, "seed": "00"}, "seed"),
    ],
)
def test_bad_draws_are_refused_and_write_nothing(
    client: TestClient, platform: Platform, paid: list[str], body: dict[str, Any], message: str
) -> None:
    """Bad input: 422 validation_failed naming the problem, no sample, no record."""
    auditor = as_staff(client, platform, "auditor")
    refused = assert_problem(auditor.post(SAMPLES, body), 422, "validation_failed")
    assert message in str(refused), refused
    assert sample_count(platform) == 0
    assert [r.outcome for r in records(platform, action="audit.sample.draw")] in ([], ["refused"])


def test_unknown_samples_and_items_and_bad_results(
    client: TestClient, platform: Platform, paid: list[str]
) -> None:
    """404 audit_sample_not_found for an unknown sample or a payment not in it;
    a problem needs its finding; an unknown outcome is refused; a result is
    recorded once (409 invalid_transition). Nothing changes."""
    auditor, checker = as_staff(client, platform, "auditor"), as_staff(client, platform, "auditor")
    sample = draw(auditor, 1)
    payment_id = sample["items"][0]["payment_id"]
    for response in (
        checker.get(f"{SAMPLES}/smp_nope"),
        checker.get(f"{SAMPLES}/smp_nope/report"),
        checker.post(f"{SAMPLES}/smp_nope/items/{payment_id}/result", {"outcome": "ok"}),
        checker.post(item_path(sample, "pay_nope", "result"), {"outcome": "ok"}),
    ):
        assert_problem(response, 404, "audit_sample_not_found")
    before = sample_rows(platform)
    problem = checker.post(item_path(sample, payment_id, "result"), {"outcome": "problem"})
    assert (
        "finding must not be empty" in assert_problem(problem, 422, "validation_failed")["detail"]
    )
    assert_problem(
        checker.post(item_path(sample, payment_id, "result"), {"outcome": "maybe"}),
        422,
        "validation_failed",
    )
    assert sample_rows(platform) == before
    checker.ok(checker.post(item_path(sample, payment_id, "result"), {"outcome": "ok"}))
    assert_problem(
        checker.post(
            item_path(sample, payment_id, "result"), {"outcome": "problem", "finding": "x"}
        ),
        409,
        "invalid_transition",
    )
