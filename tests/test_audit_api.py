"""/v1/audit as an internal auditor uses it, on both engines: keyword search
with pagination and CSV export (AUD-2), chain verification (AUD-3), for
auditors only (SEC-4/SEC-5) — and every look into the log is itself logged
(AUD-4)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tongbao.api.app import create_app
from tongbao.audit import tables as t
from tongbao.clock import ManualClock
from tongbao.platform import Platform

from .api_helpers import Api, assert_problem, new_customer
from .audit_helpers import rows, tamper
from .staff_helpers import principal, staff_session


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(platform))


@pytest.fixture
def history(platform: Platform, clock: ManualClock) -> list[int]:
    """Five operations recorded by the platform's own audit log, an hour apart."""
    seqs = []
    for n, (action, note) in enumerate(
        [
            ("customer.update", "修改手机号"),
            ("payment.approve", "大额转账"),
            ("customer.update", "修改地址"),
            ("payment.reject", "可疑交易"),
            ("customer.freeze", "冻结账户"),
        ],
        start=1,
    ):
        record = platform.db.run(
            lambda conn, a=action, d=note, n=n: platform.audit.record(
                conn,
                actor="staff:staff_op",
                action=a,
                target=f"customer:cus_{n}",
                details={"note": d},
            )
        )
        seqs.append(record.seq)
        clock.advance(timedelta(hours=1))
    return seqs


@pytest.fixture
def auditor(client: TestClient, platform: Platform, history: list[int]) -> Api:
    """Signed in after the history was made (sessions end after 30 idle minutes)."""
    return Api(client, staff_session(platform, ["auditor"]))


def own_uses(platform: Platform, action: str) -> list[dict[str, Any]]:
    return [r for r in rows(platform.db) if r["action"] == action]


def test_an_auditor_searches_by_keyword_and_pages_newest_first(
    auditor: Api, platform: Platform, history: list[int]
) -> None:
    """AUD-2: keyword and filters; cursor pagination; details as JSON, states
    only as digests."""
    first = auditor.ok(auditor.get("/v1/audit/records", action="customer.update", limit=1))
    assert [r["seq"] for r in first["data"]] == [history[2]]
    assert first["data"][0]["details"] == {"note": "修改地址"}
    assert first["data"][0]["before_digest"] is None
    second = auditor.ok(
        auditor.get(
            "/v1/audit/records", action="customer.update", limit=1, cursor=first["next_cursor"]
        )
    )
    assert [r["seq"] for r in second["data"]] == [history[0]]
    assert second["next_cursor"] is None

    found = auditor.ok(auditor.get("/v1/audit/records", keyword="可疑"))
    assert [r["target"] for r in found["data"]] == ["customer:cus_4"]


def test_every_search_is_itself_recorded(
    auditor: Api, platform: Platform, history: list[int]
) -> None:
    """AUD-4: who searched the audit log, for what, from where, and how much they saw."""
    auditor.ok(auditor.get("/v1/audit/records", keyword="可疑", actor="staff:staff_op"))
    (use,) = own_uses(platform, "audit.search")
    assert use["actor"] == principal(platform, auditor.token).actor
    assert use["source_ip"] == "testclient"
    assert use["target"] == "audit_log"
    assert orjson.loads(use["details"]) == {
        "filters": {"actor": "staff:staff_op", "keyword": "可疑"},
        "cursor": None,
        "results": 1,
    }


def test_time_filters_take_instants_with_their_zone(
    auditor: Api, platform: Platform, history: list[int], clock: ManualClock
) -> None:
    start = platform.db.read(lambda conn: platform.audit.get(conn, history[0])).at
    since = (start + timedelta(hours=3)).isoformat()
    found = auditor.ok(auditor.get("/v1/audit/records", since=since, actor="staff:staff_op"))
    assert [r["seq"] for r in found["data"]] == [history[4], history[3]]
    naive = (start + timedelta(hours=3)).replace(tzinfo=None).isoformat()
    assert_problem(auditor.get("/v1/audit/records", since=naive), 422, "validation_failed")
    assert_problem(auditor.get("/v1/audit/records", cursor="abc"), 422, "validation_failed")


def test_one_record_by_seq(auditor: Api, history: list[int]) -> None:
    record = auditor.ok(auditor.get(f"/v1/audit/records/{history[1]}"))
    assert record["action"] == "payment.approve" and len(record["hash"]) == 64
    assert_problem(auditor.get("/v1/audit/records/999999"), 404, "audit_record_not_found")


def test_the_export_is_a_csv_download_and_is_recorded(
    auditor: Api, platform: Platform, history: list[int]
) -> None:
    """AUD-2: a CSV report (UTF-8 with BOM) of every matching record, oldest first."""
    response = auditor.get("/v1/audit/export.csv", actor="staff:staff_op")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [int(row["seq"]) for row in table] == history
    assert "冻结账户" in table[-1]["details"]
    (use,) = own_uses(platform, "audit.export")
    assert '"records":5' in use["details"]


def test_verify_reports_an_intact_and_a_broken_chain(
    auditor: Api, platform: Platform, history: list[int]
) -> None:
    """AUD-3: the chain check over HTTP names the first broken record; the
    check is recorded with its outcome."""
    intact = auditor.ok(auditor.get("/v1/audit/verify"))
    assert intact["ok"] is True and intact["first_break"] is None
    assert intact["records"] >= len(history)

    tamper(
        platform.db,
        lambda conn: conn.execute(
            update(t.records).where(t.records.c.seq == history[2]).values(target="x")
        ),
    )
    broken = auditor.ok(auditor.get("/v1/audit/verify"))
    assert broken["ok"] is False
    assert broken["first_break"]["seq"] == history[2]
    assert broken["first_break"]["kind"] == "modified"
    assert [r["outcome"] for r in own_uses(platform, "audit.verify")] == ["ok", "failed"]


def test_only_auditors_see_the_audit_log(
    client: TestClient, platform: Platform, history: list[int]
) -> None:
    """SEC-4/SEC-5: customers and staff without the audit permissions are
    refused — the administrator too — and nothing they asked for is recorded
    as a search."""
    _, customer_token = new_customer(platform, "王五")
    customer = Api(client, customer_token)
    administrator = Api(client, staff_session(platform, ["administrator"]))
    operator = Api(client, staff_session(platform, ["operator"]))
    for path in ("/v1/audit/records", "/v1/audit/export.csv", "/v1/audit/verify"):
        assert_problem(customer.get(path), 403, "forbidden")
        assert_problem(administrator.get(path), 403, "permission_denied")
        assert_problem(operator.get(path), 403, "permission_denied")
        assert_problem(Api(client, "tbk_nonsense").get(path), 401, "unauthenticated")
    assert own_uses(platform, "audit.search") == []
    assert own_uses(platform, "audit.export") == []
