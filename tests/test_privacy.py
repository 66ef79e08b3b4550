"""Personal data at rest, consent and retention (SEC-1, SEC-3, DATA-1, AUD-6).

What a customer, an auditor or a regulator cares about: no personal data lies
in the database in clear; staff find a customer by phone or ID number without
decrypting the table; payments need the customer's consent to the current
privacy policy; and personal data past its retention period is destroyed so
that not even a backup can bring it back.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection, func, select, text

from tests.payment_helpers import Env as Harness
from tests.payment_helpers import Person
from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.customers import CustomerKind, CustomerStatus
from tongbao.customers.service import SHREDDED
from tongbao.ledger import transfer_postings
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import Platform

ID_NUMBER = "110101199003071233"
PHONE = "13912345678"


@pytest.fixture
def harness(platform: Platform) -> Harness:
    return Harness(platform)


def _register(platform: Platform, name: str = "王小明", **extra: str | None) -> str:
    def create(conn: Connection) -> str:
        return platform.customers.register(
            conn,
            kind=CustomerKind.PERSON,
            name=name,
            phone=extra.get("phone", PHONE),
            id_number=extra.get("id_number", ID_NUMBER),
            policy_version=extra.get("policy", platform.settings.privacy_policy_version),
        ).id

    return platform.db.run(create)


def _raw_rows(platform: Platform) -> str:
    """Every customer and card row as the database holds it, as one string."""
    with platform.db.snapshot() as conn:
        rows = conn.execute(text("SELECT * FROM customers")).all()
        rows += conn.execute(text("SELECT * FROM bank_cards")).all()
        rows += conn.execute(text("SELECT * FROM ledger_accounts")).all()
    return "\n".join(repr(tuple(r)) for r in rows)


def test_personal_data_is_stored_only_as_ciphertext(platform: Platform, harness: Harness) -> None:
    """SEC-1: name, phone, ID number, card number and holder never lie in clear."""
    customer_id = _register(platform)
    person = harness.person("赵钱孙")
    stored = _raw_rows(platform)
    for secret in ("王小明", PHONE, ID_NUMBER, "赵钱孙", person.card_number):
        assert secret not in stored
    customer = platform.db.read(lambda conn: platform.customers.get(conn, customer_id))
    assert (customer.name, customer.phone, customer.id_number) == ("王小明", PHONE, ID_NUMBER)
    card = platform.db.read(
        lambda conn: platform.customers.card(conn, person.customer.id, person.card_id or "")
    )
    assert card.holder_name == "赵钱孙"


def test_find_a_customer_by_phone_or_id_number_through_the_blind_index(
    platform: Platform,
) -> None:
    """SEC-1: exact-match lookups work on encrypted values (keyed blind index)."""
    wanted = _register(platform)
    _register(platform, "李雷", phone="13700001111", id_number="310104198511124567")

    def find(**criteria: str) -> list[str]:
        return [
            c.id
            for c in platform.db.read(lambda conn: platform.customers.search(conn, **criteria))
        ]

    assert find(phone="+86 139-1234-5678") == [wanted]
    assert find(id_number=f" {ID_NUMBER} ") == [wanted]
    assert find(phone="13600000000") == []
    with pytest.raises(errors.ValidationFailed):
        find(id_number="110101199003071234")  # wrong check digit (3 is right)


def test_bad_personal_data_is_refused_and_nothing_is_written(platform: Platform) -> None:
    with pytest.raises(errors.ValidationFailed, match="ID number"):
        _register(platform, id_number="123456")
    with pytest.raises(errors.ValidationFailed, match="mobile"):
        _register(platform, phone="12345")
    with platform.db.snapshot() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 0


def test_payment_orders_name_people_masked(platform: Platform, harness: Harness) -> None:
    """SEC-3: history shows 张*丰, never the full name, yet the payee-name check
    (PAY-5) still compares against the real name."""
    payer = harness.person("张三丰", topup=10_000)
    payee = harness.person("李四光")
    order = harness.pay(
        payer,
        PaymentRequest(
            kind=PaymentKind.TRANSFER,
            amount=100,
            payee_account_id=payee.customer.account_id,
            payee_name="李四光",
        ),
    )
    assert (order.payer_name, order.payee_name) == ("张*丰", "李*光")
    with pytest.raises(errors.PayeeNameMismatch):
        harness.pay(
            harness.person("王五", topup=10_000),
            PaymentRequest(
                kind=PaymentKind.TRANSFER,
                amount=100,
                payee_account_id=payee.customer.account_id,
                payee_name="李*光",
            ),
        )


def test_no_payment_without_consent_to_the_current_policy(
    platform: Platform, harness: Harness
) -> None:
    """DATA-1: consent is recorded with its version and time; without it (or
    after withdrawing it) payments are refused and nothing is written."""
    payer = harness.person("张三", topup=10_000)
    payee = harness.person("李四")
    request = PaymentRequest(
        kind=PaymentKind.TRANSFER,
        amount=100,
        payee_account_id=payee.customer.account_id,
        payee_name="李四",
    )
    customer = platform.db.run(
        lambda conn: platform.customers.withdraw_consent(conn, payer.customer)
    )
    before = _count(platform, "payment_orders")
    with pytest.raises(errors.ConsentRequired):
        harness.pay(Person(customer, payer.card_id, payer.card_number), request)
    assert _count(platform, "payment_orders") == before

    version = platform.settings.privacy_policy_version
    customer = platform.db.run(
        lambda conn: platform.customers.record_consent(conn, customer, version, channel="app")
    )
    assert harness.pay(Person(customer, payer.card_id, payer.card_number), request).state == (
        "succeeded"
    )
    history = platform.db.read(lambda conn: platform.customers.consents(conn, customer.id))
    assert [(c.version, c.channel, c.withdrawn_at is None) for c in history] == [
        (version, "app", True),
        (version, "api", False),
    ]


def _count(platform: Platform, table: str) -> int:
    with platform.db.snapshot() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _close(platform: Platform, person: Person) -> None:
    """Empty the wallet into the suspense account and close the customer."""

    def close(conn: Connection) -> None:
        balance = platform.ledger.balance(conn, person.customer.account_id).available
        if balance:
            suspense = platform.ledger.account_id_by_code(conn, "suspense")
            platform.ledger.transfer(
                conn, transfer_postings(person.customer.account_id, suspense, balance)
            )
        platform.customers.close(conn, person.customer.id)

    platform.db.run(close)


def test_purge_crypto_shreds_customers_past_retention(
    platform: Platform, harness: Harness, clock: ManualClock
) -> None:
    """AUD-6: five years after a customer leaves, the purge destroys their
    personal data by destroying their data key; the ledger, the payment
    history (masked names) and other customers are untouched; re-running
    destroys nothing more; every batch is in the audit log."""
    leaver = harness.person("钱多多", topup=5_000)
    stayer = harness.person("孙悟空", topup=5_000)
    _close(platform, leaver)
    leaver_row = platform.db.read(lambda conn: platform.customers.get(conn, leaver.customer.id))
    assert leaver_row.status is CustomerStatus.CLOSED

    years = platform.settings.retention_years["customer"]
    clock.advance(timedelta(days=365 * years))  # not yet: the leap days make this short

    def due() -> int:
        report = platform.retention.purge(dry_run=True)
        return {c.record_class: c.destroyed for c in report.classes}["customer"]

    assert due() == 0
    clock.advance(timedelta(days=3))
    assert due() == 1

    report = platform.retention.purge()
    destroyed = {c.record_class: c.destroyed for c in report.classes}
    assert destroyed["customer"] == 1

    gone = platform.db.read(lambda conn: platform.customers.get(conn, leaver.customer.id))
    assert (gone.name, gone.phone, gone.id_number, gone.shredded) == (SHREDDED, None, None, True)
    with platform.db.snapshot() as conn:
        ciphertext = conn.execute(
            text("SELECT name FROM customers WHERE id = :id"), {"id": leaver.customer.id}
        ).scalar_one()
    with pytest.raises(errors.DataShredded):
        platform.db.read(
            lambda conn: platform.keyring.decrypt(conn, ciphertext, field="customers.name")
        )
    same_phone = platform.db.read(
        lambda conn: platform.customers.search(conn, phone="13800138000")
    )
    assert [c.id for c in same_phone] == [stayer.customer.id]  # the index went too
    kept = platform.db.read(lambda conn: platform.customers.get(conn, stayer.customer.id))
    assert kept.name == "孙悟空"
    history = platform.db.read(
        lambda conn: platform.payments.history(conn, leaver.customer).items
    )
    assert history and all(p.payee_name == "钱*多的钱包" for p in history)

    again = platform.retention.purge()
    assert again.destroyed == 0
    with platform.db.snapshot() as conn:
        purges = conn.execute(
            select(func.count())
            .select_from(text("audit_records"))
            .where(text("action = 'retention.purge'"))
        ).scalar_one()
    assert purges >= 1


def test_purge_deletes_notifications_past_retention(
    platform: Platform, harness: Harness, clock: ManualClock
) -> None:
    harness.person("周杰", topup=5_000)
    platform.notify()
    sent = _count(platform, "local_notifications")
    assert sent > 0
    clock.advance(timedelta(days=366 * platform.settings.retention_years["notification"] + 1))
    report = platform.retention.purge(batch_size=1)  # many batches, same result
    destroyed = {c.record_class: c.destroyed for c in report.classes}
    assert destroyed["notification"] >= sent
    assert _count(platform, "local_notifications") == 0
    assert _count(platform, "notification_outbox") == 0


def test_purge_refuses_an_empty_batch(platform: Platform) -> None:
    """A batch of 0 would never finish; refused before anything runs."""
    with pytest.raises(errors.ValidationFailed, match="batch_size"):
        platform.retention.purge(batch_size=0)
