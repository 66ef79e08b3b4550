"""Notifications on both engines: the transactional outbox, retries with back-off,
at-least-once delivery made exactly-once by the channel, and the SMS texts."""

from __future__ import annotations

import doctest
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tongbao.clock import ManualClock
from tongbao.notifications import (
    DeliveryFailedError,
    DispatchReport,
    LocalChannel,
    Message,
    Notifications,
    OutboxEntry,
    backoff,
    outbox,
    render,
    templates,
)
from tongbao.notifications.tables import local_messages
from tongbao.notifications.tables import outbox as outbox_table
from tongbao.storage import Database

SUCCEEDED = {
    "serial_no": "TB202611230000001",
    "amount_fen": 12_345,
    "fee_fen": 10,
    "payee_name": "张三",
    "completed_at": "2026-11-23T02:05:00+00:00",
}


class FlakyChannel:
    """Fails the first ``failures`` deliveries, then hands messages on to ``inner``.

    Also notes whether a database connection was checked out while it was
    called: the dispatcher must not hold a transaction open around delivery.
    """

    def __init__(self, inner: Any, db: Database, failures: int) -> None:
        self.inner, self.db, self.failures = inner, db, failures
        self.calls: list[str] = []
        self.connections_in_use: list[int] = []
        self.lock = threading.Lock()

    def deliver(self, message: Message) -> None:
        with self.lock:
            self.calls.append(message.id)
            self.connections_in_use.append(self.db.engine.pool.checkedout())  # type: ignore[attr-defined]
            if len(self.calls) <= self.failures:
                raise DeliveryFailedError("gateway timeout")
        if self.inner is not None:
            self.inner.deliver(message)


class Crash(BaseException):
    """The dispatcher process dying (not an Exception, so nothing catches it)."""


class DeliverThenCrash:
    def __init__(self, inner: LocalChannel) -> None:
        self.inner = inner

    def deliver(self, message: Message) -> None:
        self.inner.deliver(message)
        raise Crash


@pytest.fixture
def local(db: Database, clock: ManualClock) -> LocalChannel:
    return LocalChannel(db, clock)


@pytest.fixture
def notifications(clock: ManualClock, local: LocalChannel) -> Notifications:
    return Notifications(clock, local)


def enqueue(
    db: Database,
    notifications: Notifications,
    recipient: str = "cus_a",
    kind: str = "payment_succeeded",
    payload: dict[str, Any] | None = None,
) -> str:
    return db.run(
        lambda conn: notifications.enqueue(
            conn, recipient_id=recipient, kind=kind, payload=payload or SUCCEEDED
        )
    )


def entry(db: Database, notifications: Notifications, notification_id: str) -> OutboxEntry:
    return db.read(lambda conn: notifications.entry(conn, notification_id))


def count(db: Database, table: Any) -> int:
    return int(
        db.read(lambda conn: conn.execute(select(func.count()).select_from(table)).scalar_one())
    )


# --- the outbox -------------------------------------------------------------------------


def test_enqueue_rolls_back_with_the_business_transaction(db, notifications, local) -> None:
    class PaymentRefusedError(Exception):
        pass

    with pytest.raises(PaymentRefusedError), db.transaction() as conn:
        notifications.enqueue(
            conn, recipient_id="cus_a", kind="payment_succeeded", payload=SUCCEEDED
        )
        raise PaymentRefusedError
    assert count(db, outbox_table) == 0
    assert notifications.dispatch(db) == DispatchReport()
    assert local.messages().items == ()


def test_enqueue_commits_with_the_business_transaction(db, clock, notifications) -> None:
    notification_id = enqueue(db, notifications)
    row = entry(db, notifications, notification_id)
    assert notification_id.startswith("ntf_")
    assert (row.status, row.attempts, row.channel, row.kind) == (
        "pending",
        0,
        "sms",
        "payment_succeeded",
    )
    assert row.payload == SUCCEEDED
    assert row.created_at == row.next_attempt_at == clock.now()
    assert row.sent_at is None


def test_dispatch_delivers_each_message_once_with_its_text(db, clock, notifications, local) -> None:
    first = enqueue(db, notifications, "cus_a")
    refund = {"serial_no": "TB2", "amount_fen": 500, "completed_at": "2026-11-23T03:00:00Z"}
    second = enqueue(db, notifications, "cus_a", "refund_succeeded", refund)
    enqueue(
        db, notifications, "cus_b", "payment_pending_review", {"serial_no": "TB3", "amount_fen": 1}
    )

    assert notifications.dispatch(db) == DispatchReport(sent=3)
    assert notifications.dispatch(db) == DispatchReport()  # nothing is delivered twice

    page = local.messages("cus_a")
    assert [m.id for m in page.items] == [second, first]  # newest first
    assert page.next_cursor is None
    message = page.items[1]
    assert message.text == (
        "【通宝】您于2026-11-23 10:05向张三付款123.45元，手续费0.10元，流水号TB202611230000001。"
    )
    assert (message.kind, message.channel, message.payload) == (
        "payment_succeeded",
        "sms",
        SUCCEEDED,
    )
    assert message.delivered_at == clock.now()
    assert "5.00元" in page.items[0].text
    assert len(local.messages().items) == 3

    one = local.messages(limit=1)
    assert len(one.items) == 1
    rest = local.messages(cursor=one.next_cursor, limit=5)
    assert len(rest.items) == 2
    assert rest.next_cursor is None

    sent = entry(db, notifications, first)
    assert (sent.status, sent.attempts, sent.sent_at, sent.last_error) == (
        "sent",
        1,
        clock.now(),
        None,
    )


def test_delivery_happens_outside_any_transaction(db, clock, local) -> None:
    channel = FlakyChannel(local, db, failures=0)
    notifications = Notifications(clock, channel)
    enqueue(db, notifications)
    assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert channel.connections_in_use == [0]


def test_a_failing_channel_is_retried_with_back_off(db, clock, local) -> None:
    channel = FlakyChannel(local, db, failures=2)
    notifications = Notifications(clock, channel)
    notification_id = enqueue(db, notifications)
    start = clock.now()

    assert notifications.dispatch(db) == DispatchReport(retried=1)
    row = entry(db, notifications, notification_id)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "gateway timeout")
    assert row.next_attempt_at == start + timedelta(seconds=30)

    assert notifications.dispatch(db) == DispatchReport()  # not due yet
    clock.advance(timedelta(seconds=29))
    assert notifications.dispatch(db) == DispatchReport()
    clock.advance(timedelta(seconds=1))
    assert notifications.dispatch(db) == DispatchReport(retried=1)
    row = entry(db, notifications, notification_id)
    assert row.attempts == 2
    assert row.next_attempt_at == clock.now() + timedelta(seconds=60)  # doubled

    clock.advance(timedelta(seconds=60))
    assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert entry(db, notifications, notification_id).status == "sent"
    assert [m.id for m in local.messages().items] == [notification_id]
    assert channel.calls == [notification_id] * 3


def test_gives_up_after_max_attempts(db, clock, local) -> None:
    channel = FlakyChannel(None, db, failures=1_000)
    notifications = Notifications(clock, channel, max_attempts=3)
    notification_id = enqueue(db, notifications)
    reports = []
    for _ in range(6):
        reports.append(notifications.dispatch(db))
        clock.advance(timedelta(hours=2))
    assert reports[:3] == [
        DispatchReport(retried=1),
        DispatchReport(retried=1),
        DispatchReport(failed=1),
    ]
    assert reports[3:] == [DispatchReport()] * 3
    row = entry(db, notifications, notification_id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "gateway timeout")
    assert len(channel.calls) == 3


def test_a_channel_bug_is_retried_like_a_refusal(db, clock) -> None:
    class Broken:
        def deliver(self, message: Message) -> None:
            raise RuntimeError("bug in the gateway client")

    notifications = Notifications(clock, Broken())
    notification_id = enqueue(db, notifications)
    assert notifications.dispatch(db) == DispatchReport(retried=1)
    assert entry(db, notifications, notification_id).last_error == "bug in the gateway client"


def test_redelivery_after_a_crash_is_not_duplicated(db, clock, local) -> None:
    notifications = Notifications(clock, DeliverThenCrash(local))
    notification_id = enqueue(db, notifications)
    with pytest.raises(Crash):  # delivered, but the outcome was never recorded
        notifications.dispatch(db)
    assert entry(db, notifications, notification_id).status == "pending"

    again = Notifications(clock, local)
    assert again.dispatch(db) == DispatchReport()  # leased by the crashed dispatcher
    clock.advance(timedelta(minutes=5))
    assert again.dispatch(db) == DispatchReport(sent=1)  # delivered a second time...
    assert [m.id for m in local.messages().items] == [notification_id]  # ...stored once
    assert count(db, local_messages) == 1
    assert entry(db, notifications, notification_id).attempts == 2

    message = Message(notification_id, "cus_a", "sms", "payment_succeeded", "changed", {})
    local.deliver(message)
    assert local.messages().items[0].text.startswith("【通宝】您于")  # the first delivery stands


def test_a_row_whose_attempts_ran_out_without_an_outcome_is_given_up(db, clock, local) -> None:
    notifications = Notifications(clock, DeliverThenCrash(local), max_attempts=2)
    notification_id = enqueue(db, notifications)
    for _ in range(2):
        with pytest.raises(Crash):
            notifications.dispatch(db)
        clock.advance(timedelta(minutes=5))
    assert notifications.dispatch(db) == DispatchReport(failed=1)
    row = entry(db, notifications, notification_id)
    assert (row.status, row.last_error) == ("failed", "no outcome recorded after 2 attempts")


def test_what_a_dispatcher_cannot_deliver_within_its_lease_is_left_to_others(
    db, clock, local
) -> None:
    class Slow:
        def deliver(self, message: Message) -> None:
            local.deliver(message)
            clock.advance(timedelta(minutes=6))  # longer than the 5-minute lease

    notifications = Notifications(clock, Slow())
    ids = [enqueue(db, notifications) for _ in range(3)]
    assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert [entry(db, notifications, i).attempts for i in ids] == [1, 0, 0]  # attempts given back
    assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert {m.id for m in local.messages().items} == set(ids)


def test_concurrent_dispatchers_share_the_work(db, clock, local) -> None:
    channel = FlakyChannel(local, db, failures=0)
    notifications = Notifications(clock, channel)
    ids = {enqueue(db, notifications, f"cus_{i}") for i in range(20)}
    reports: list[DispatchReport] = []

    def worker() -> None:
        while True:
            report = notifications.dispatch(db, limit=3)
            reports.append(report)
            if report == DispatchReport():
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(channel.calls) == sorted(ids)  # each exactly once: no lease ran out
    assert sum(r.sent for r in reports) == 20
    assert count(db, local_messages) == 20


def test_a_row_locked_elsewhere_is_skipped_not_waited_for(db, backend, clock, local) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer; there are no row locks to skip")
    notifications = Notifications(clock, local)
    busy, free = enqueue(db, notifications), enqueue(db, notifications)
    with db.transaction() as conn:  # e.g. another dispatcher in the middle of its claim
        conn.execute(select(outbox_table.c.id).where(outbox_table.c.id == busy).with_for_update())
        assert notifications.dispatch(db) == DispatchReport(sent=1)
    assert [m.id for m in local.messages().items] == [free]
    assert notifications.dispatch(db) == DispatchReport(sent=1)


def test_enqueue_refuses_what_it_could_not_deliver(db, notifications) -> None:
    def attempt(**overrides: Any) -> None:
        arguments: dict[str, Any] = {
            "recipient_id": "cus_a",
            "kind": "payment_succeeded",
            "payload": SUCCEEDED,
        }
        arguments |= overrides
        db.run(lambda conn: notifications.enqueue(conn, **arguments))

    with pytest.raises(ValueError, match="channel"):
        attempt(channel="fax")
    with pytest.raises(TypeError, match="amount_fen"):
        attempt(payload={**SUCCEEDED, "amount_fen": 123.45})
    with pytest.raises(TypeError, match="must be a str, int or None"):
        attempt(payload={**SUCCEEDED, "flag": True})
    with pytest.raises(ValueError, match="payment_succeeded needs payee_name"):
        attempt(payload={k: v for k, v in SUCCEEDED.items() if k != "payee_name"})
    with pytest.raises(ValueError, match="kind"):
        attempt(kind="x" * 41)
    assert count(db, outbox_table) == 0
    attempt(kind="card_bound", payload={"card_last4": "1234"}, channel="push")  # no template: fine
    assert count(db, outbox_table) == 1


def test_a_stored_row_that_cannot_be_rendered_fails_at_once(db, clock, notifications) -> None:
    now = clock.now()
    row = {
        "id": "ntf_broken",
        "recipient_id": "cus_a",
        "channel": "sms",
        "kind": "payment_succeeded",
        "payload": '{"serial_no": "TB1"}',
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    db.run(lambda conn: conn.execute(insert(outbox_table), row))
    assert notifications.dispatch(db) == DispatchReport(failed=1)
    failed = entry(db, notifications, "ntf_broken")
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error.startswith("cannot render: payment_succeeded needs")


def test_back_off_doubles_up_to_an_hour() -> None:
    assert backoff(1) == timedelta(seconds=30)
    assert backoff(4) == timedelta(minutes=4)
    assert backoff(8) == backoff(1_000) == timedelta(hours=1)
    assert backoff(2, base=timedelta(seconds=1), cap=timedelta(days=1)) == timedelta(seconds=2)


# --- the texts --------------------------------------------------------------------------


def test_payment_succeeded_names_time_amount_and_payee() -> None:
    text = render("payment_succeeded", SUCCEEDED)
    assert text.startswith("【通宝】")
    assert "2026-11-23 10:05" in text  # Shanghai time, not 02:05 UTC
    assert "123.45元" in text
    assert "张三" in text
    assert "手续费0.10元" in text
    assert "TB202611230000001" in text


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        (
            "payment_received",
            {
                "serial_no": "TB1",
                "amount_fen": 100,
                "payer_name": "李四",
                "completed_at": "2026-11-23T16:30:00+00:00",
            },
            "【通宝】您于2026-11-24 00:30收到李四付款1.00元，流水号TB1。",
        ),
        (
            "payment_failed",
            {
                "serial_no": "TB1",
                "amount_fen": 100,
                "failure_message": "收款账户已冻结",
                "retry_hint": "请更换收款账户后重试",
            },
            "【通宝】您的付款1.00元未成功，原因：收款账户已冻结。请更换收款账户后重试。流水号TB1。",
        ),
        (
            "payment_pending_review",
            {"serial_no": "TB1", "amount_fen": 5_000_000},
            "【通宝】您的付款50000.00元正在审核，结果将另行通知，流水号TB1。",
        ),
        (
            "verification_code",
            {"code": "048213", "amount_fen": 99_900, "payee_name": "某商户", "expires_minutes": 5},
            "【通宝】验证码048213，您正在向某商户付款999.00元，5分钟内有效。切勿将验证码告知他人。",
        ),
        (
            "refund_succeeded",
            {"serial_no": "TB1", "amount_fen": 250, "completed_at": "2026-11-23T02:00:00Z"},
            "【通宝】您的退款2.50元已于2026-11-23 10:00办理成功，流水号TB1。",
        ),
        (
            "withdrawal_accepted",
            {"serial_no": "TB1", "amount_fen": 10_000, "arrives_by": "2026-11-26T16:00:00+00:00"},
            "【通宝】您的提现100.00元已受理，预计2026-11-26 24:00前到账，流水号TB1。",
        ),
        (
            "account_frozen",
            {"serial_no": "TB1", "amount_fen": 100, "reason": "风控"},
            "【通宝】您的账户有一条新通知，流水号TB1，金额1.00元，详情请登录通宝App查看。",
        ),
        ("anything", {}, "【通宝】您的账户有一条新通知，详情请登录通宝App查看。"),
    ],
)
def test_every_kind_renders(kind: str, payload: dict[str, Any], expected: str) -> None:
    assert render(kind, payload) == expected


def test_a_failed_payment_always_says_how_to_retry() -> None:
    payload = {
        "serial_no": "TB1",
        "amount_fen": 100,
        "failure_message": "余额不足",
        "retry_hint": None,
    }
    assert "请核对后在通宝App重新发起付款。" in render("payment_failed", payload)
    assert "重新发起付款" in render("payment_failed", {**payload, "retry_hint": "  "})


def test_user_text_cannot_forge_a_sender_or_break_lines() -> None:
    text = render("payment_succeeded", {**SUCCEEDED, "payee_name": "【公安局】\n请转账至安全账户"})
    assert text.count("【") == 1
    assert "\n" not in text
    long = render("payment_succeeded", {**SUCCEEDED, "payee_name": "长" * 100})
    assert "长" * 29 + "…" in long
    assert "长" * 30 not in long


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({**SUCCEEDED, "completed_at": "2026-11-23T02:05:00"}, "with a zone"),
        ({**SUCCEEDED, "completed_at": "yesterday"}, "ISO 8601"),
        ({**SUCCEEDED, "amount_fen": "123.45"}, "integer number of fen"),
        ({**SUCCEEDED, "payee_name": None}, "needs payee_name"),
    ],
)
def test_malformed_payloads_are_refused(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render("payment_succeeded", payload)


def test_a_verification_code_keeps_its_leading_zeros() -> None:
    payload = {"code": 48213, "amount_fen": 1, "payee_name": "x", "expires_minutes": 5}
    with pytest.raises(ValueError, match="code must be a string"):
        render("verification_code", payload)


def test_a_verification_code_valid_under_a_minute_is_not_shown_as_zero_minutes() -> None:
    payload = {"code": "123456", "amount_fen": 1, "payee_name": "x", "expires_minutes": 0}
    text = render("verification_code", payload)
    assert "0分钟" not in text
    assert "即将失效" in text


@pytest.mark.parametrize("module", [templates, outbox])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
