"""Payments at the service level (issue 2, PAY-1 … PAY-13, the RISK-5 review hook, fees).

Every test drives the real platform (``platform`` fixture: SQLite and
PostgreSQL, a manual clock starting Monday 2026-11-23 10:00 Shanghai, the
simulated bank) the way customers and staff would, and checks what they care
about: what is refused and that a refusal writes nothing, where the money is
after each step, what the customer is told, and that the ledger still
verifies afterwards (the ``env`` fixture runs ``verify_ledger`` at teardown).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection

from tests.payment_helpers import (
    Env,
    Person,
    expected_movement,
    net_movement,
    reviewer,
)
from tongbao import errors
from tongbao.banking import Instruction, InstructionDirection
from tongbao.clock import SHANGHAI, ManualClock
from tongbao.ledger import HoldState
from tongbao.payments import (
    FAILURES,
    Mode,
    PaymentFilter,
    PaymentKind,
    PaymentOrder,
    PaymentRequest,
    PaymentState,
    Scenario,
    serial,
)
from tongbao.payments.service import FEE_INCOME
from tongbao.platform import Platform

MONDAY = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 Shanghai, the clock's start
FRIDAY = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 10:00 Shanghai, same week
END_OF_TUESDAY = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 24:00 Shanghai
END_OF_NEXT_MONDAY = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)

SUCCEEDED, FAILED = PaymentState.SUCCEEDED, PaymentState.FAILED
TRANSFER, MERCHANT = PaymentKind.TRANSFER, PaymentKind.MERCHANT_PAYMENT
TOPUP, WITHDRAWAL = PaymentKind.TOPUP, PaymentKind.WITHDRAWAL


@pytest.fixture
def env(platform: Platform) -> Iterator[Env]:
    environment = Env(platform)
    yield environment
    environment.assert_ledger_ok()  # PAY-13: the ledger verifies after every scenario


# --- PAY-1: completeness ---------------------------------------------------------------


def test_pay1_incomplete_or_inconsistent_requests_are_refused_and_write_nothing(
    env: Env,
) -> None:
    """PAY-1: each incomplete or inconsistent request is refused with its own
    error, by ``create`` and by ``pay`` alike, and leaves no order, event,
    ledger entry, hold or notification behind."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    shop = env.merchant()
    max_fen = env.p.settings.max_amount_fen

    def to_bob(amount: int, **more: Any) -> PaymentRequest:
        return PaymentRequest(TRANSFER, amount, bob.account_id, payee_name=bob.name, **more)

    cases: list[tuple[str, PaymentRequest, type[Exception]]] = [
        ("transfer without payee", PaymentRequest(TRANSFER, 100), errors.ValidationFailed),
        ("merchant payment without payee", PaymentRequest(MERCHANT, 100), errors.ValidationFailed),
        ("top-up without card", PaymentRequest(TOPUP, 100), errors.ValidationFailed),
        ("withdrawal without card", PaymentRequest(WITHDRAWAL, 100), errors.ValidationFailed),
        (
            "unknown payee account",
            PaymentRequest(TRANSFER, 100, "acct_01M8000000000000000000000X", payee_name="x"),
            errors.AccountNotFound,
        ),
        (
            "transfer to a merchant account",
            PaymentRequest(TRANSFER, 100, shop.account_id, payee_name=shop.name),
            errors.AccountNotFound,
        ),
        (
            "merchant payment to a person",
            PaymentRequest(MERCHANT, 100, bob.account_id),
            errors.AccountNotFound,
        ),
        (
            "transfer to oneself",
            PaymentRequest(TRANSFER, 100, alice.account_id, payee_name=alice.name),
            errors.SamePayerPayee,
        ),
        (
            "purpose of 141 characters",
            to_bob(100, purpose="款" * 141),
            errors.ValidationFailed,
        ),
        ("zero amount", to_bob(0), errors.InvalidAmount),
        ("negative amount", to_bob(-100), errors.InvalidAmount),
        (
            "fractional amount",
            to_bob(1.5),  # type: ignore[arg-type]
            errors.InvalidAmount,
        ),
        (
            "amount above the maximum",
            to_bob(max_fen + 1),
            errors.AmountTooLarge,
        ),
        (
            "refund through pay",
            PaymentRequest(PaymentKind.REFUND, 100, shop.account_id),
            errors.ValidationFailed,
        ),
        (
            "scenario that does not fit the kind",
            to_bob(100, scenario=Scenario.QR_CODE),
            errors.ValidationFailed,
        ),
    ]
    before, outbox = env.counts(), env.outbox_count()
    for label, request, error in cases:
        for call in (env.payments.create, env.payments.pay):
            with pytest.raises(error):
                env.db.run(lambda conn, c=call, r=request: c(conn, alice.customer, r))
            assert env.counts() == before, f"{label}: a refusal wrote rows"
            assert env.outbox_count() == outbox, f"{label}: a refusal queued a notification"

    # The edges themselves are accepted: 140 characters (trimmed) and the maximum amount.
    quote = env.create(alice, to_bob(max_fen, purpose="  " + "款" * 140 + "  "))
    assert quote.state is PaymentState.CREATED
    assert (quote.amount, quote.purpose) == (max_fen, "款" * 140)


# --- PAY-2: payment method ------------------------------------------------------------


def test_pay2_an_expired_card_is_not_usable(env: Env, clock: ManualClock) -> None:
    """PAY-2: a card is usable through its expiry date and refused (card_not_usable)
    from the day after, for top-ups and withdrawals, with nothing written."""
    alice = env.person("张三", topup=50_000, expires_on=date(2026, 11, 30))
    clock.set(datetime(2026, 11, 30, 15, 0, tzinfo=UTC))  # 23:00 on the last valid day
    assert env.topup(alice, 1_000).state is SUCCEEDED
    clock.advance(timedelta(hours=1))  # 00:00 Shanghai, 1 December
    before = env.counts()
    for kind in (TOPUP, WITHDRAWAL):
        with pytest.raises(errors.CardNotUsable):
            env.pay(alice, PaymentRequest(kind, 1_000, card_id=alice.card_id))
    assert env.counts() == before
    assert env.available(alice) == 51_000


def test_pay2_unbound_or_foreign_cards_are_not_usable(env: Env) -> None:
    """PAY-2: only the customer's own, still bound cards pay."""
    alice = env.person("张三", topup=10_000)
    bob = env.person("李四")
    before = env.counts()
    with pytest.raises(errors.CardNotFound):  # Bob's card is not Alice's
        env.pay(alice, PaymentRequest(TOPUP, 1_000, card_id=bob.card_id))
    env.p.customers.unbind_card(env.db, alice.id, alice.card_id or "")
    for kind in (TOPUP, WITHDRAWAL):
        with pytest.raises(errors.CardNotFound):
            env.pay(alice, PaymentRequest(kind, 1_000, card_id=alice.card_id))
    assert env.counts() == before


def test_pay2_an_agreement_cancelled_at_the_bank_fails_with_bank_rejected(env: Env) -> None:
    """PAY-2: the bank checks the quick-pay agreement; a cancelled one is refused
    and the payment fails with bank_rejected, its reason and a retry hint
    (PAY-9); no money moves anywhere."""
    alice = env.person("张三", topup=10_000, bank_balance=1_000_000)
    card = env.db.read(lambda conn: env.p.customers.card(conn, alice.id, alice.card_id or ""))
    env.p.simulated_bank().cancel_agreement(card.agreement_id)
    bank_before = env.p.simulated_bank().card_balance(alice.card_number or "")

    order = env.topup(alice, 5_000)

    assert order.state is FAILED
    assert order.failure_code == "bank_rejected"
    assert order.failure_message and "agreement cancelled" in order.failure_message
    assert order.retry_hint == FAILURES["bank_rejected"].retry_hint
    assert env.available(alice) == 10_000
    assert env.p.simulated_bank().card_balance(alice.card_number or "") == bank_before
    assert net_movement(env, order.id) == {}
    failed = [m for m in env.messages(alice) if m.kind == "payment_failed"]
    assert len(failed) == 1 and "50.00元" in failed[0].text


def test_pay2_a_card_without_enough_money_is_rejected_by_the_bank(env: Env) -> None:
    """PAY-2: the card's balance is the bank's to check."""
    alice = env.person("张三", bank_balance=3_000)
    order = env.topup(alice, 3_001)
    assert (order.state, order.failure_code) == (FAILED, "bank_rejected")
    assert order.failure_message and "insufficient funds" in order.failure_message
    assert env.available(alice) == 0


def test_pay2_a_frozen_customer_cannot_pay(env: Env) -> None:
    """PAY-2: a frozen account pays nothing: no new payment, no top-up, and no
    confirmation of a payment quoted before the freeze."""
    alice = env.person("张三", topup=50_000)
    bob = env.person("李四")
    quote = env.create(alice, PaymentRequest(TRANSFER, 1_000, bob.account_id, payee_name="李四"))
    alice = env.freeze(alice)
    before = env.counts()
    with pytest.raises(errors.AccountFrozen):
        env.transfer(alice, bob, 1_000)
    with pytest.raises(errors.AccountFrozen):
        env.pay(alice, PaymentRequest(TOPUP, 1_000, card_id=alice.card_id))
    with pytest.raises(errors.AccountFrozen):
        env.confirm(alice, quote.id)
    assert env.counts() == before
    assert env.get(quote.id).state is PaymentState.CREATED
    assert env.available(alice) == 50_000


def test_pay2_the_wallet_balance_must_suffice(env: Env) -> None:
    """PAY-2: paying more than the available balance is refused outright and writes nothing."""
    alice = env.person("张三", topup=10_000)
    bob = env.person("李四")
    before = env.counts()
    with pytest.raises(errors.InsufficientFunds):
        env.transfer(alice, bob, 10_001)
    with pytest.raises(errors.InsufficientFunds):  # 100.00 + 0.10 fee > 100.00
        env.withdraw(alice, 10_000)
    assert env.counts() == before
    assert env.transfer(alice, bob, 10_000).state is SUCCEEDED


# --- PAY-3: the summary before submission ----------------------------------------------


def test_pay3_a_quote_shows_amount_fee_and_split_and_moves_no_money(env: Env) -> None:
    """PAY-3: ``create`` returns the summary the customer confirms (payee, amount,
    fee, who gets what); nothing is booked or held until ``confirm``."""
    alice = env.person("张三", topup=100_000)
    shop = env.merchant()
    before = env.counts()

    quote = env.create(alice, PaymentRequest(MERCHANT, 10_000, shop.account_id, purpose="拿铁"))

    assert quote.state is PaymentState.CREATED
    assert (quote.amount, quote.fee, quote.purpose) == (10_000, 60, "拿铁")
    assert (quote.split.debit, quote.split.credit, quote.split.fee) == (10_000, 9_940, 60)
    # SEC-3: a person is named masked, a shop by its business name.
    assert (quote.payer_name, quote.payee_name) == ("张*", "通宝咖啡")
    assert quote.hold_id is None
    after = env.counts()
    assert after["ledger_entries"] == before["ledger_entries"]
    assert after["ledger_holds"] == before["ledger_holds"]
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held, mine.available) == (100_000, 0, 100_000)
    assert env.ledger_balance(shop) == 0

    paid = env.confirm(alice, quote.id)

    assert paid.state is SUCCEEDED and paid.serial_no == quote.serial_no
    assert env.available(alice) == 90_000
    assert env.ledger_balance(shop) == 9_940

    withdrawal = env.create(alice, PaymentRequest(WITHDRAWAL, 50_000, card_id=alice.card_id))
    assert (withdrawal.fee, withdrawal.split.debit, withdrawal.split.credit) == (50, 50_050, 50_000)
    assert env.available(alice) == 90_000


# --- PAY-4: one-time codes ----------------------------------------------------------------


def test_pay4_a_large_payment_waits_for_the_sms_code_with_the_debit_held(env: Env) -> None:
    """PAY-4: at the threshold the debit is held (available drops, the ledger
    balance does not), the code arrives by SMS, a wrong code is counted and
    recorded as an event, and the right code pays."""
    threshold = env.p.settings.verification_threshold_fen
    alice = env.person("张三", topup=300_000)
    bob = env.person("李四")
    below = env.transfer(alice, bob, threshold - 1)
    assert below.state is SUCCEEDED  # below the threshold: no code
    alice_ledger = env.ledger_balance(alice)

    order = env.transfer(alice, bob, threshold)

    assert order.state is PaymentState.AWAITING_VERIFICATION
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held) == (alice_ledger, threshold)
    assert mine.available == alice_ledger - threshold
    assert env.ledger_balance(bob) == threshold - 1
    code = env.code_for(alice)
    sms = [m for m in env.messages(alice) if m.kind == "verification_code"][-1]
    assert "1000.00元" in sms.text and "李*" in sms.text and bob.name not in sms.text
    wrong = "000000" if code != "000000" else "111111"

    result = env.db.run(lambda conn: env.payments.verify(conn, alice.customer, order.id, wrong))

    assert not result.accepted
    assert result.attempts_left == env.p.settings.verification_max_attempts - 1
    assert result.order.state is PaymentState.AWAITING_VERIFICATION
    notes = [e.note for e in env.events(order.id)]
    assert "wrong verification code, attempt 1" in notes

    result = env.db.run(
        lambda conn: env.payments.verify(conn, alice.customer, order.id, f" {code} ")
    )

    assert result.accepted and result.order.state is SUCCEEDED
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held) == (alice_ledger - threshold, 0)
    assert env.ledger_balance(bob) == 2 * threshold - 1
    assert net_movement(env, order.id) == expected_movement(env, result.order)


def test_pay4_too_many_wrong_codes_fail_the_payment_and_release_the_hold(env: Env) -> None:
    """PAY-4/AUTH-5: after ``verification_max_attempts`` wrong codes the payment
    fails (verification_failed) and the held money is free again."""
    alice = env.person("张三", topup=200_000)
    bob = env.person("李四")
    order = env.transfer(alice, bob, 150_000)
    code = env.code_for(alice)
    wrong = "123456" if code != "123456" else "654321"
    attempts = env.p.settings.verification_max_attempts
    left = []
    for _ in range(attempts):
        result = env.db.run(lambda conn: env.payments.verify(conn, alice.customer, order.id, wrong))
        left.append(result.attempts_left)
    assert left == list(range(attempts - 1, -1, -1))
    failed = env.get(order.id)
    assert (failed.state, failed.failure_code) == (FAILED, "verification_failed")
    assert failed.retry_hint == FAILURES["verification_failed"].retry_hint
    assert env.available(alice) == 200_000 and env.balance(alice.account_id).held == 0
    events = env.events(order.id)
    assert sum(1 for e in events if (e.note or "").startswith("wrong verification")) == (
        attempts - 1
    )
    assert events[-1].to_state is FAILED
    with pytest.raises(errors.InvalidTransition):  # the right code comes too late
        env.db.run(lambda conn: env.payments.verify(conn, alice.customer, order.id, code))
    assert env.ledger_balance(bob) == 0
    assert net_movement(env, order.id) == {}


def test_pay4_an_expired_code_fails_the_payment(env: Env, clock: ManualClock) -> None:
    """PAY-4: a code is valid for its lifetime only; after that the payment fails
    (verification_expired) both when the customer tries it and when the
    background sweep finds it, and the hold is released."""
    ttl = timedelta(seconds=env.p.settings.verification_code_ttl_seconds)
    alice = env.person("张三", topup=500_000)
    bob = env.person("李四")
    tried = env.transfer(alice, bob, 200_000)
    code = env.code_for(alice)
    swept = env.transfer(alice, bob, 200_000)
    assert env.available(alice) == 100_000

    clock.advance(ttl - timedelta(seconds=1))
    assert env.payments.expire_stale() == 0
    clock.advance(timedelta(seconds=1))
    result = env.db.run(lambda conn: env.payments.verify(conn, alice.customer, tried.id, code))

    assert not result.accepted
    assert (result.order.state, result.order.failure_code) == (FAILED, "verification_expired")
    assert env.payments.expire_stale() == 1
    swept_now = env.get(swept.id)
    assert (swept_now.state, swept_now.failure_code) == (FAILED, "verification_expired")
    assert env.available(alice) == 500_000 and env.ledger_balance(bob) == 0


def test_pay4_top_ups_need_no_code(env: Env) -> None:
    """PAY-4: a top-up only moves money into the customer's own wallet under the
    bank's agreement: no one-time code, whatever the amount."""
    alice = env.person("张三")
    order = env.topup(alice, 3 * env.p.settings.verification_threshold_fen)
    assert order.state is SUCCEEDED
    assert env.available(alice) == order.amount
    assert not [m for m in env.messages(alice) if m.kind == "verification_code"]


# --- PAY-5: unfamiliar payees -------------------------------------------------------------


def test_pay5_a_first_transfer_needs_the_payee_name(env: Env) -> None:
    """PAY-5: a first transfer to a payee needs the payee's name (compared without
    whitespace and case); after one succeeded transfer the payee is familiar.
    Quotes that never paid do not make a payee familiar; merchants need no name."""
    alice = env.person("Zhang San", topup=100_000)
    carol = env.person("Zhang San Two", topup=100_000)
    bob = env.person("Li Si")
    shop = env.merchant()
    before = env.counts()
    with pytest.raises(errors.PayeeNameRequired):
        env.transfer(alice, bob, 1_000, name=None)
    with pytest.raises(errors.PayeeNameMismatch):
        env.transfer(alice, bob, 1_000, name="Li Wu")
    assert env.counts() == before

    quote = env.create(alice, PaymentRequest(TRANSFER, 1_000, bob.account_id, payee_name="Li Si"))
    env.db.run(lambda conn: env.payments.cancel(conn, alice.customer, quote.id))
    with pytest.raises(errors.PayeeNameRequired):  # a cancelled quote paid nothing
        env.transfer(alice, bob, 1_000, name=None)

    assert env.transfer(alice, bob, 1_000, name="  li   SI ").state is SUCCEEDED
    assert env.transfer(alice, bob, 2_000, name=None).state is SUCCEEDED  # familiar now
    with pytest.raises(errors.PayeeNameMismatch):  # a wrong name is still wrong
        env.transfer(alice, bob, 1_000, name="Li Wu")
    with pytest.raises(errors.PayeeNameRequired):  # familiar to Alice, not to Carol
        env.transfer(carol, bob, 1_000, name=None)
    assert env.buy(alice, shop, 1_000).state is SUCCEEDED
    assert env.ledger_balance(bob) == 3_000


# --- PAY-6: execution -------------------------------------------------------------------


def test_pay6_a_wallet_transfer_settles_in_real_time(env: Env) -> None:
    """PAY-6: both wallets show the transfer the moment the call returns."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    order = env.transfer(alice, bob, 12_345)
    assert order.state is SUCCEEDED and order.completed_at == MONDAY
    assert env.available(alice) == 100_000 - 12_345
    assert env.balance(bob.account_id).available == 12_345
    assert env.transit().ledger == 0
    assert net_movement(env, order.id) == expected_movement(env, order)


def test_pay6_a_withdrawal_arrives_by_the_end_of_the_third_working_day(
    env: Env, clock: ManualClock
) -> None:
    """PAY-6: a Friday withdrawal is debited as soon as the bank accepts it, is due
    by 24:00 Shanghai on the third working day (Wednesday), and once the bank
    settles it the money is in the card and our clearing account shows it."""
    alice = env.person("张三", topup=200_000)
    bank = env.p.simulated_bank()
    card_before = bank.card_balance(alice.card_number or "")
    clearing_before = env.clearing().ledger
    fees_before = env.fee_income()
    clock.set(FRIDAY)

    order = env.withdraw(alice, 50_000)

    assert order.state is PaymentState.PROCESSING and order.bank_reference
    due = env.p.calendar.add_working_days(date(2026, 11, 27), 3)
    assert due == date(2026, 12, 2)
    assert order.expected_arrival_by == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held) == (200_000 - 50_050, 0)  # debited, fee included
    assert env.transit().ledger == 50_050
    assert bank.card_balance(alice.card_number or "") == card_before
    accepted = [m for m in env.messages(alice) if m.kind == "withdrawal_accepted"]
    assert accepted and "2026-12-02 24:00" in accepted[0].text

    clock.advance(timedelta(seconds=env.p.settings.sim_bank_settlement_delay_seconds))
    env.p.tick()

    done = env.get(order.id)
    assert done.state is SUCCEEDED and done.completed_at is not None
    assert done.completed_at <= (done.expected_arrival_by or done.completed_at)
    assert bank.card_balance(alice.card_number or "") == card_before + 50_000
    assert env.transit().ledger == 0
    assert env.clearing().ledger == clearing_before - 50_000
    assert env.fee_income() == fees_before + 50
    assert net_movement(env, order.id) == expected_movement(env, done)


def test_pay6_arrival_counts_working_days_across_a_holiday(env: Env, clock: ManualClock) -> None:
    """PAY-6: before National Day 2026 (1-7 October off, Saturday 10 October
    worked) the three working days are 8, 9 and 10 October."""
    alice = env.person("张三", topup=100_000)
    clock.set(datetime(2026, 9, 30, 2, 0, tzinfo=UTC))
    order = env.withdraw(alice, 10_000)
    day, counted = date(2026, 9, 30), 0
    while counted < 3:
        day += timedelta(days=1)
        counted += env.p.calendar.is_working_day(day)
    assert day == date(2026, 10, 10)
    assert order.expected_arrival_by == datetime(2026, 10, 10, 16, 0, tzinfo=UTC)


def test_pay6_a_withdrawal_the_bank_cannot_complete_returns_everything(
    env: Env, clock: ManualClock
) -> None:
    """PAY-6/PAY-9: if the card is closed before the bank settles, the payment fails
    (bank_failed) and the whole debit, fee included, is back in the wallet."""
    alice = env.person("张三", topup=200_000)
    bank = env.p.simulated_bank()
    fees_before = env.fee_income()
    order = env.withdraw(alice, 80_000)
    assert env.available(alice) == 200_000 - 80_080

    bank.set_card_status(alice.card_number or "", "closed")
    clock.advance(timedelta(minutes=5))
    bank.advance()
    env.payments.sync_bank()

    failed = env.get(order.id)
    assert (failed.state, failed.failure_code) == (FAILED, "bank_failed")
    assert failed.retry_hint == FAILURES["bank_failed"].retry_hint
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held, mine.available) == (200_000, 0, 200_000)
    assert env.transit().ledger == 0
    assert env.fee_income() == fees_before
    assert net_movement(env, order.id) == {}
    assert any(m.kind == "payment_failed" for m in env.messages(alice))


def test_pay6_a_withdrawal_the_bank_refuses_at_once_releases_the_hold(env: Env) -> None:
    """PAY-6: a closed card is refused at submission; nothing leaves the wallet."""
    alice = env.person("张三", topup=100_000)
    env.p.simulated_bank().set_card_status(alice.card_number or "", "closed")
    order = env.withdraw(alice, 30_000)
    assert (order.state, order.failure_code) == (FAILED, "bank_rejected")
    assert order.failure_message and "card closed" in order.failure_message
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held) == (100_000, 0)
    assert net_movement(env, order.id) == {}


def test_pay6_a_withdrawal_submitted_after_the_hold_lifetime_is_not_lost(
    env: Env, clock: ManualClock
) -> None:
    """PAY-6/PAY-13 (regression): a withdrawal whose bank call is delayed (a crash
    after commit, repaired by ``sync_bank``) past ``payment_hold_ttl_seconds``
    must either not reach the bank (failed, ``hold_expired``, nothing held) or
    be booked. At 39aa0f6 the bank accepted and paid the card, then recording
    failed on the expired hold (HoldExpired) in every background round: the
    card had the money, the ledger never said so, the payment stayed
    ``processing``."""
    alice = env.person("张三", topup=100_000)
    bank = env.p.simulated_bank()
    card_before = bank.card_balance(alice.card_number or "")
    order = env.pay(alice, PaymentRequest(WITHDRAWAL, 50_000, card_id=alice.card_id))
    # The process stops here, before submit_to_bank, and comes back a day later.
    clock.advance(timedelta(seconds=env.p.settings.payment_hold_ttl_seconds + 3_600))
    problems = []
    for _ in range(2):
        try:
            env.p.tick()
        except errors.TongbaoError as exc:
            problems.append(exc.code)
        clock.advance(timedelta(minutes=5))

    final = env.get(order.id)
    paid_out = bank.card_balance(alice.card_number or "") - card_before
    wallet = env.balance(alice.account_id)
    situation = (
        f"bank paid {paid_out} fen to the card; payment {final.state}; wallet ledger "
        f"{wallet.ledger}, held {wallet.held}; background rounds raised {problems}"
    )
    if paid_out:  # the bank paid the card: our books must show the withdrawal
        assert final.state is SUCCEEDED, situation
        assert (wallet.ledger, wallet.held) == (100_000 - 50_050, 0), situation
    else:  # never sent: failed, nothing held
        assert (final.state, final.failure_code) == (FAILED, "hold_expired"), situation
        assert (wallet.ledger, wallet.held) == (100_000, 0), situation
    assert problems == [], situation


def test_pay6_a_withdrawal_the_bank_took_before_a_long_outage_is_still_booked(
    env: Env, clock: ManualClock
) -> None:
    """PAY-6/PAY-13: the instruction reached the bank, then the platform was down
    for longer than the hold's lifetime before recording the answer. The bank
    pays the card all the same, so the withdrawal must be booked once, the
    wallet debited by amount and fee, and nothing left held."""
    alice = env.person("张三", topup=100_000)
    bank = env.p.simulated_bank()
    card_before = bank.card_balance(alice.card_number or "")
    order = env.pay(alice, PaymentRequest(WITHDRAWAL, 50_000, card_id=alice.card_id))
    card = env.db.read(lambda conn: env.p.customers.card(conn, alice.id, alice.card_id or ""))
    instruction = Instruction(
        order.id, InstructionDirection.CREDIT, card.agreement_id, 50_000, "x", card.bank_code
    )
    # What submit_to_bank sends; the process dies before recording the answer.
    bank.submit(env.p.instruction_signer.sign(instruction, clock.now()))
    clock.advance(timedelta(seconds=env.p.settings.payment_hold_ttl_seconds + 3_600))
    env.p.tick()
    env.p.tick()

    final = env.get(order.id)
    assert final.state is SUCCEEDED
    assert bank.card_balance(alice.card_number or "") == card_before + 50_000
    wallet = env.balance(alice.account_id)
    assert (wallet.ledger, wallet.held) == (100_000 - 50_050, 0)
    assert net_movement(env, order.id) == expected_movement(env, final)
    assert env.transit().ledger == 0


# --- PAY-7: serial numbers and history ---------------------------------------------------


def test_pay7_serial_numbers_are_unique_valid_and_queryable(env: Env, clock: ManualClock) -> None:
    """PAY-7: every payment gets a valid serial number of its own, naming its kind
    and day, and can be looked up by it, by the initiator and by the payee."""
    alice = env.person("张三", topup=500_000)
    bob = env.person("李四")
    shop = env.merchant()
    orders = [env.transfer(alice, bob, 100 + i) for i in range(12)]
    orders += [env.buy(alice, shop, 200 + i) for i in range(12)]
    orders += [env.topup(alice, 300 + i) for i in range(4)]
    orders += [env.withdraw(alice, 400)]
    orders.append(
        env.db.run(lambda conn: env.payments.refund(conn, shop.customer, orders[12].id, 50))
    )
    clock.advance(timedelta(milliseconds=1))
    serials = [o.serial_no for o in orders]
    assert len(set(serials)) == len(serials)
    for order in orders:
        assert serial.is_valid(order.serial_no), order.serial_no
        assert order.serial_no[17:19] == serial.KIND_CODES[order.kind.value]
        assert order.serial_no.startswith("20261123100000")
        assert env.get(order.serial_no).id == order.id
    transfer = orders[0]
    for viewer in (alice, bob):
        found = env.db.read(
            lambda conn, v=viewer: env.payments.get(conn, transfer.serial_no, customer_id=v.id)
        )
        assert found.id == transfer.id
    with pytest.raises(errors.PaymentNotFound):
        env.db.read(lambda conn: env.payments.get(conn, transfer.serial_no, customer_id=shop.id))
    typo = transfer.serial_no[:-3] + str((int(transfer.serial_no[-3]) + 1) % 10) + "00"
    with pytest.raises(errors.PaymentNotFound):
        env.get(typo)


def test_pay7_a_serial_number_collision_is_retried_not_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAY-7 (bug): ``payments/serial.py`` and docs/payments.md promise that two
    orders of the same kind and millisecond drawing the same seven random
    digits are turned by the unique index "into a retry, never a duplicate".
    Nothing retries: the second customer's payment is refused with a raw
    IntegrityError. Forced here by making the random part repeat once."""
    alice = env.person("张三", topup=10_000)
    bob = env.person("李四")
    draws = iter(["1234567", "1234567", "7654321", "1111111", "2222222"])
    monkeypatch.setattr(
        serial,
        "new_serial",
        lambda at, kind: serial.compose(at, serial.KIND_CODES[kind], next(draws)),
    )
    first = env.transfer(alice, bob, 100)
    try:
        second = env.transfer(alice, bob, 200)
    except Exception as exc:
        pytest.fail(f"a serial collision refused the payment: {type(exc).__name__}: {exc}")
    assert second.state is SUCCEEDED
    assert serial.is_valid(second.serial_no) and second.serial_no != first.serial_no
    assert env.ledger_balance(bob) == 300


def test_pay7_history_filters_and_pages_through_every_payment_once(
    env: Env, clock: ManualClock
) -> None:
    """PAY-7: the history holds every payment sent or received, newest first;
    filters by state, kind and creation time; cursor pages return each once."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四", topup=100_000)
    shop = env.merchant()
    mine = list(env.db.read(lambda conn: env.payments.history(conn, alice.customer)).items)
    assert [o.kind for o in mine] == [TOPUP]
    cut = None
    for i in range(6):
        clock.advance(timedelta(minutes=10))
        if i == 3:
            cut = clock.now()
        mine.append(env.transfer(alice, bob, 100 + i))
        mine.append(env.buy(alice, shop, 1_000 + i))
        mine.append(env.transfer(bob, alice, 10 + i))  # received
        env.transfer(bob, env.person(f"路人{i}"), 5)  # neither sent nor received by Alice
    mine.append(env.topup(alice, 777))
    env.topup(env.person("王五", bank_balance=0), 100)  # someone else's failure
    quote = env.create(alice, PaymentRequest(TRANSFER, 5, bob.account_id))
    mine.append(quote)
    mine = [env.get(o.id) for o in mine]
    everything = env.db.read(lambda conn: env.payments.history(conn, alice.customer, limit=100))
    assert [o.id for o in everything.items] == sorted((o.id for o in mine), reverse=True)

    def pages(filters: PaymentFilter, limit: int) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            page = env.db.read(
                lambda conn, c=cursor: env.payments.history(
                    conn, alice.customer, filters=filters, cursor=c, limit=limit
                )
            )
            seen.extend(o.id for o in page.items)
            assert len(page.items) <= limit
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    for limit in (1, 4, 7):
        got = pages(PaymentFilter(), limit)
        assert len(got) == len(set(got)) == len(mine)
        assert set(got) == {o.id for o in mine}
    assert set(pages(PaymentFilter(state=PaymentState.CREATED), 2)) == {quote.id}
    assert set(pages(PaymentFilter(kind=TOPUP), 2)) == {o.id for o in mine if o.kind is TOPUP}
    assert set(pages(PaymentFilter(state=SUCCEEDED, kind=MERCHANT), 2)) == {
        o.id for o in mine if o.kind is MERCHANT
    }
    assert cut is not None
    window = PaymentFilter(created_from=cut, created_to=cut + timedelta(minutes=20))
    assert set(pages(window, 2)) == {o.id for o in mine if cut <= o.created_at < window.created_to}  # type: ignore[operator]
    assert len(pages(window, 2)) == 6


# --- PAY-8: result notifications ------------------------------------------------------------


def test_pay8_payer_and_payee_are_told_time_amount_and_counterparty(env: Env) -> None:
    """PAY-8: a succeeded payment notifies the payer (time, amount in yuan, payee)
    and the payee (what arrived, from whom), delivered by the dispatcher."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    shop = env.merchant("通宝咖啡")
    env.messages(alice)  # the top-up's own message is out of the way
    transfer = env.transfer(alice, bob, 12_345)
    purchase = env.buy(alice, shop, 10_000)

    report = env.p.notifications.dispatch(env.db)

    assert report.sent == 4
    sent = {m.payload["serial_no"]: m for m in env.messages(alice) if m.kind == "payment_succeeded"}
    text = sent[transfer.serial_no].text
    assert "2026-11-23 10:00" in text and "123.45元" in text and "向李*付款" in text
    assert transfer.serial_no in text
    text = sent[purchase.serial_no].text
    assert "100.00元" in text and "通宝咖啡" in text
    (received,) = [m for m in env.messages(bob) if m.kind == "payment_received"]
    assert "123.45元" in received.text and "收到张*付款" in received.text  # SEC-3: masked
    (sold,) = [m for m in env.messages(shop) if m.kind == "payment_received"]
    assert "99.40元" in sold.text  # what the merchant actually received
    assert env.p.notifications.dispatch(env.db).sent == 0  # delivered once


def test_pay8_a_rolled_back_payment_leaves_no_notification(env: Env) -> None:
    """PAY-8: the notification is part of the payment's transaction: if that rolls
    back, nobody is told about a payment that never happened."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    env.messages(alice)
    before, outbox = env.counts(), env.outbox_count()

    def pay_then_crash(conn: Connection) -> None:
        env.payments.pay(
            conn, alice.customer, PaymentRequest(TRANSFER, 500, bob.account_id, payee_name="李四")
        )
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        env.db.run(pay_then_crash)
    assert env.counts() == before and env.outbox_count() == outbox
    assert env.p.notifications.dispatch(env.db).sent == 0
    assert [m.kind for m in env.messages(bob)] == []
    assert env.available(alice) == 100_000


# --- PAY-9: failures ------------------------------------------------------------------------


def test_pay9_every_failure_reason_tells_the_customer_how_to_retry(env: Env) -> None:
    """PAY-9: each failure code has a message and a retry hint, and the SMS for a
    failed payment carries the hint."""
    for code, reason in FAILURES.items():
        assert reason.code == code and reason.message and reason.retry_hint
    alice = env.person("张三", bank_balance=0)
    order = env.topup(alice, 100)
    assert (order.failure_code, order.retry_hint) == (
        "bank_rejected",
        FAILURES["bank_rejected"].retry_hint,
    )
    (sms,) = [m for m in env.messages(alice) if m.kind == "payment_failed"]
    assert "1.00元" in sms.text and FAILURES["bank_rejected"].retry_hint[:20] in sms.text
    assert replace(order, failure_code=None).retry_hint is None


def test_pay9_a_confirm_refused_for_insufficient_funds_can_be_retried(env: Env) -> None:
    """PAY-9: not enough money refuses the confirmation but keeps the quote, so the
    customer tops up and confirms the same payment again."""
    alice = env.person("张三", topup=1_000)
    shop = env.merchant()
    quote = env.create(alice, PaymentRequest(MERCHANT, 5_000, shop.account_id))
    events = len(env.events(quote.id))
    with pytest.raises(errors.InsufficientFunds):
        env.confirm(alice, quote.id)
    assert env.get(quote.id).state is PaymentState.CREATED
    assert len(env.events(quote.id)) == events
    env.topup(alice, 4_000)
    assert env.confirm(alice, quote.id).state is SUCCEEDED
    assert env.available(alice) == 0 and env.ledger_balance(shop) == 5_000 - 30


# --- PAY-10: confirmation within one working day -----------------------------------------


def test_pay10_the_payer_may_object_until_the_end_of_the_next_working_day(
    env: Env, clock: ManualClock
) -> None:
    """PAY-10: a Monday payment may be objected to until 24:00 Tuesday; the objection
    and its reason are recorded; acknowledging accepts; silence past the
    deadline accepts, and objecting then is refused."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    objected = env.transfer(alice, bob, 1_000)
    acknowledged = env.transfer(alice, bob, 1_000)
    silent = env.transfer(alice, bob, 1_000)
    for order in (objected, acknowledged, silent):
        assert order.objection_deadline == END_OF_TUESDAY
        assert order.confirmation(clock.now()) == "pending"

    with pytest.raises(errors.ValidationFailed):
        env.db.run(lambda conn: env.payments.object(conn, alice.customer, objected.id, "  "))
    with pytest.raises(errors.PaymentNotFound):  # the payee cannot object for the payer
        env.db.run(lambda conn: env.payments.object(conn, bob.customer, objected.id, "no"))
    clock.set(END_OF_TUESDAY - timedelta(seconds=1))
    done = env.db.run(
        lambda conn: env.payments.object(conn, alice.customer, objected.id, "我没有付过这笔钱")
    )
    assert done.objected_at == clock.now() and done.objection_reason == "我没有付过这笔钱"
    assert done.confirmation(clock.now()) == "objected"
    assert env.events(objected.id)[-1].note == "customer objected (PAY-10)"
    ok = env.db.run(lambda conn: env.payments.acknowledge(conn, alice.customer, acknowledged.id))
    assert ok.acknowledged_at == clock.now() and ok.confirmation(clock.now()) == "accepted"
    for order_id in (objected.id, acknowledged.id):
        with pytest.raises(errors.ObjectionWindowClosed):
            env.db.run(lambda conn, i=order_id: env.payments.object(conn, alice.customer, i, "x"))

    clock.set(END_OF_TUESDAY)
    assert env.get(silent.id).confirmation(clock.now()) == "accepted"
    with pytest.raises(errors.ObjectionWindowClosed):
        env.db.run(lambda conn: env.payments.object(conn, alice.customer, silent.id, "late"))
    with pytest.raises(errors.ObjectionWindowClosed):
        env.db.run(lambda conn: env.payments.acknowledge(conn, alice.customer, silent.id))

    clock.set(FRIDAY)  # a Friday payment is open until the end of Monday
    assert env.transfer(alice, bob, 1_000).objection_deadline == END_OF_NEXT_MONDAY
    quote = env.create(alice, PaymentRequest(TRANSFER, 10, bob.account_id))
    assert quote.confirmation(clock.now()) == "not_applicable"


# --- PAY-11: modes and scenarios -------------------------------------------------------------


def test_pay11_a_next_day_payment_executes_at_nine_on_the_next_working_day(
    env: Env, clock: ManualClock
) -> None:
    """PAY-11: a next-day payment made on Friday holds the money until 09:00
    Shanghai on Monday and executes then, not a minute earlier."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    clock.set(FRIDAY + timedelta(hours=5))  # 15:00 Friday
    order = env.transfer(alice, bob, 20_000, mode=Mode.NEXT_DAY)
    monday_nine = datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI)
    assert order.state is PaymentState.PROCESSING
    assert order.execute_at == monday_nine
    assert env.balance(alice.account_id).held == 20_000 and env.available(alice) == 80_000
    assert env.ledger_balance(bob) == 0

    assert env.payments.run_due() == 0
    clock.set(monday_nine - timedelta(minutes=1))
    assert env.p.tick()["executed"] == 0
    assert env.get(order.id).state is PaymentState.PROCESSING
    clock.set(monday_nine)
    assert env.payments.run_due() == 1

    done = env.get(order.id)
    assert done.state is SUCCEEDED and done.completed_at == monday_nine
    assert env.ledger_balance(bob) == 20_000
    mine = env.balance(alice.account_id)
    assert (mine.ledger, mine.held) == (80_000, 0)
    assert net_movement(env, order.id) == expected_movement(env, done)
    assert env.payments.run_due() == 0  # executed once


def test_pay11_scheduled_payments_execute_on_time_or_are_cancelled(
    env: Env, clock: ManualClock
) -> None:
    """PAY-11: a scheduled payment holds its money until its time; cancelling it
    before then releases the hold; once due it can no longer be cancelled."""
    alice = env.person("张三", topup=100_000)
    shop = env.merchant()
    at = clock.now() + timedelta(hours=3)
    kept = env.buy(alice, shop, 10_000, mode=Mode.SCHEDULED, execute_at=at)
    dropped = env.buy(alice, shop, 20_000, mode=Mode.SCHEDULED, execute_at=at)
    late = env.buy(alice, shop, 30_000, mode=Mode.SCHEDULED, execute_at=at)
    assert env.available(alice) == 40_000

    cancelled = env.db.run(lambda conn: env.payments.cancel(conn, alice.customer, dropped.id))
    assert cancelled.state is PaymentState.CANCELLED
    assert env.available(alice) == 60_000
    assert env.db.read(lambda conn: env.p.ledger.hold(conn, dropped.hold_id or "")).state is (
        HoldState.VOIDED
    )
    with pytest.raises(errors.InvalidTransition):
        env.db.run(lambda conn: env.payments.cancel(conn, alice.customer, dropped.id))

    clock.set(at)
    with pytest.raises(errors.InvalidTransition):  # due: it is executing
        env.db.run(lambda conn: env.payments.cancel(conn, alice.customer, late.id))
    assert env.p.tick()["executed"] == 2
    assert env.get(kept.id).state is SUCCEEDED and env.get(late.id).state is SUCCEEDED
    assert env.get(dropped.id).state is PaymentState.CANCELLED
    assert env.ledger_balance(alice) == 60_000
    assert env.ledger_balance(shop) == 40_000 - 60 - 180
    assert net_movement(env, dropped.id) == {}


def test_pay11_schedules_that_cannot_be_kept_are_refused(env: Env, clock: ManualClock) -> None:
    """PAY-11: a schedule needs an aware time in the future within the hold's
    lifetime; bank payments run in real time only."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    now = clock.now()
    ttl = timedelta(seconds=env.p.settings.payment_hold_ttl_seconds)
    base = PaymentRequest(TRANSFER, 100, bob.account_id, payee_name="李四", mode=Mode.SCHEDULED)
    bad = [
        base,  # no execute_at
        replace(base, execute_at=now.replace(tzinfo=None)),
        replace(base, execute_at=now),
        replace(base, execute_at=now + ttl + timedelta(seconds=1)),
        replace(base, mode=Mode.REALTIME, execute_at=now + timedelta(hours=1)),
        PaymentRequest(WITHDRAWAL, 100, card_id=alice.card_id, mode=Mode.NEXT_DAY),
        PaymentRequest(TOPUP, 100, card_id=alice.card_id, mode=Mode.NEXT_DAY),
    ]
    before = env.counts()
    for request in bad:
        with pytest.raises(errors.ValidationFailed):
            env.pay(alice, request)
    assert env.counts() == before
    assert env.pay(alice, replace(base, execute_at=now + ttl)).state is PaymentState.PROCESSING


def test_pay11_cross_border_payments_are_not_offered(env: Env) -> None:
    """PAY-11: the cross-border scenario is refused as such; the others are labels."""
    alice = env.person("张三", topup=100_000)
    shop = env.merchant()
    before = env.counts()
    with pytest.raises(errors.ScenarioNotSupported):
        env.buy(alice, shop, 100, scenario=Scenario.CROSS_BORDER)
    assert env.counts() == before
    for scenario in (Scenario.CONSUMPTION, Scenario.BILL_PAYMENT, Scenario.QR_CODE):
        assert env.buy(alice, shop, 100, scenario=scenario).scenario is scenario
    assert env.topup(alice, 100).scenario is Scenario.QUICK_PAY


def test_pay11_a_scheduled_payment_whose_hold_ran_out_fails_and_blocks_nothing(
    env: Env, clock: ManualClock
) -> None:
    """PAY-11 (regression): if the background loop does not run for longer than the
    hold's lifetime after a scheduled payment fell due (an outage), that
    payment must end (failed ``hold_expired``, or executed) and the other due
    payments must still run. At 39aa0f6 ``run_due`` raised HoldExpired on it
    in every round, and as the oldest due payment it blocked all the others."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四")
    stale = env.transfer(
        alice, bob, 1_000, mode=Mode.SCHEDULED, execute_at=clock.now() + timedelta(hours=1)
    )
    fresh = env.transfer(
        alice, bob, 2_000, mode=Mode.SCHEDULED, execute_at=clock.now() + timedelta(hours=20)
    )
    clock.advance(timedelta(seconds=env.p.settings.payment_hold_ttl_seconds, hours=2))

    try:
        env.p.tick()
    except errors.TongbaoError as exc:
        pytest.fail(f"a background round failed: {exc}")

    stale_now, fresh_now = env.get(stale.id), env.get(fresh.id)
    assert fresh_now.state is SUCCEEDED
    mine = env.balance(alice.account_id)
    if stale_now.state is SUCCEEDED:  # executing it late would be acceptable too
        assert (mine.ledger, mine.held) == (97_000, 0)
    else:
        assert (stale_now.state, stale_now.failure_code) == (FAILED, "hold_expired")
        assert (mine.ledger, mine.held) == (98_000, 0)


# --- PAY-12: refunds --------------------------------------------------------------------------


def test_pay12_partial_refunds_never_exceed_the_payment(env: Env) -> None:
    """PAY-12: a merchant refunds a payment in parts, to the original payer, in
    real time; the total never exceeds what was paid; the fee stays with the
    institution (the merchant refunds the full amount it refunds)."""
    alice = env.person("张三", topup=100_000)
    other = env.person("李四", topup=100_000)
    shop = env.merchant()
    order = env.buy(alice, shop, 10_000)  # fee 60, merchant gets 9,940
    env.buy(other, shop, 50_000)  # the shop has other takings too
    fees = env.fee_income()
    shop_before, alice_before = env.ledger_balance(shop), env.ledger_balance(alice)

    def refund(amount: int) -> PaymentOrder:
        return env.db.run(
            lambda conn: env.payments.refund(conn, shop.customer, order.id, amount, "退一杯")
        )

    first = refund(3_000)
    assert first.kind is PaymentKind.REFUND and first.state is SUCCEEDED
    assert first.original_payment_id == order.id and first.payee_account_id == alice.account_id
    assert serial.is_valid(first.serial_no) and first.fee == 0
    assert env.ledger_balance(alice) == alice_before + 3_000
    assert env.ledger_balance(shop) == shop_before - 3_000
    assert env.get(order.id).refunded_amount == 3_000

    before = env.counts()
    with pytest.raises(errors.RefundExceedsPayment):
        refund(7_001)
    with pytest.raises(errors.InvalidAmount):
        refund(0)
    assert env.counts() == before

    second = refund(7_000)
    assert env.get(order.id).refunded_amount == 10_000
    with pytest.raises(errors.RefundExceedsPayment):
        refund(1)
    assert env.ledger_balance(alice) == alice_before + 10_000
    assert env.ledger_balance(shop) == shop_before - 10_000
    assert env.fee_income() == fees  # the 0.60 fee is not refunded
    for r in (first, second):
        assert net_movement(env, r.id) == {shop.account_id: r.amount, alice.account_id: -r.amount}
    refunds = [m for m in env.messages(alice) if m.kind == "refund_succeeded"]
    assert sorted(m.payload["amount_fen"] for m in refunds) == [3_000, 7_000]
    assert "退" in (env.get(first.id).purpose)
    assert env.events(order.id)[-1].note == f"refunded 70.00 by {second.serial_no}"


def test_pay12_only_the_payee_merchant_refunds_only_succeeded_merchant_payments(
    env: Env,
) -> None:
    """PAY-12: another merchant cannot refund; transfers, quotes and refunds
    themselves are not refundable."""
    alice = env.person("张三", topup=100_000)
    bob = env.person("李四", topup=100_000)
    shop = env.merchant("通宝咖啡")
    rival = env.merchant("对面咖啡")
    env.buy(bob, rival, 50_000)
    paid = env.buy(alice, shop, 10_000)
    quote = env.create(alice, PaymentRequest(MERCHANT, 10_000, shop.account_id))
    transfer = env.transfer(alice, bob, 1_000)
    refund = env.db.run(lambda conn: env.payments.refund(conn, shop.customer, paid.id, 100))
    before = env.counts()
    with pytest.raises(errors.PaymentNotFound):
        env.db.run(lambda conn: env.payments.refund(conn, rival.customer, paid.id, 100))
    with pytest.raises(errors.NotRefundable):
        env.db.run(lambda conn: env.payments.refund(conn, shop.customer, quote.id, 100))
    with pytest.raises(errors.NotRefundable):
        env.db.run(lambda conn: env.payments.refund(conn, bob.customer, transfer.id, 100))
    with pytest.raises(errors.PaymentNotFound):
        env.db.run(lambda conn: env.payments.refund(conn, shop.customer, refund.id, 50))
    assert env.counts() == before
    assert env.get(paid.id).refunded_amount == 100


# --- the review hook (RISK-5) -----------------------------------------------------------------


def _reviewed(env: Env, amount: int) -> tuple[Person, Person, PaymentOrder]:
    """A verified transfer at the review threshold, waiting for staff."""
    alice = env.person("张三", topup=amount + 1_000_000)
    bob = env.person("李四")
    order = env.transfer(alice, bob, amount)
    code = env.code_for(alice)
    result = env.db.run(lambda conn: env.payments.verify(conn, alice.customer, order.id, code))
    assert result.order.state is PaymentState.UNDER_REVIEW
    return alice, bob, result.order


def test_review_a_large_payment_waits_for_staff_approval(env: Env) -> None:
    """RISK-5 hook: at the review threshold the verified payment waits, held, in the
    review queue; a reviewer's approval executes it and is on record."""
    amount = env.p.settings.review_threshold_fen
    alice, bob, order = _reviewed(env, amount)
    assert order.review_reason and "50000.00" in order.review_reason
    mine = env.balance(alice.account_id)
    assert mine.held == amount and env.ledger_balance(bob) == 0
    assert [o.id for o in env.db.read(env.payments.review_queue)] == [order.id]
    assert any(m.kind == "payment_pending_review" for m in env.messages(alice))

    approved = env.db.run(lambda conn: env.payments.approve(conn, reviewer(), order.id, "ok"))

    assert approved.state is SUCCEEDED
    assert env.ledger_balance(bob) == amount
    assert env.balance(alice.account_id).held == 0
    assert "staff:staff_reviewer" in [e.actor for e in env.events(order.id)]
    assert env.db.read(env.payments.review_queue) == []
    with pytest.raises(errors.InvalidTransition):
        env.db.run(lambda conn: env.payments.reject(conn, reviewer(), order.id))


def test_review_a_large_top_up_needs_approval_but_no_code(env: Env) -> None:
    """RISK-5 hook/PAY-4: a top-up at the review threshold waits for a reviewer
    (no code, nothing held: the bank has not been asked yet); once approved
    the background round sends it to the bank and it is booked."""
    alice = env.person("张三")
    amount = env.p.settings.review_threshold_fen
    order = env.topup(alice, amount)
    assert order.state is PaymentState.UNDER_REVIEW and order.hold_id is None
    assert env.available(alice) == 0
    assert not [m for m in env.messages(alice) if m.kind == "verification_code"]
    approved = env.db.run(lambda conn: env.payments.approve(conn, reviewer(), order.id))
    assert approved.state is PaymentState.PROCESSING
    assert env.p.tick()["bank_updates"] == 1
    assert env.get(order.id).state is SUCCEEDED
    assert env.available(alice) == amount


def test_review_a_rejected_payment_fails_and_releases_the_money(env: Env) -> None:
    """RISK-5 hook: a rejection fails the payment with the reviewer's note and
    frees the held money."""
    amount = env.p.settings.review_threshold_fen
    alice, bob, order = _reviewed(env, amount)
    rejected = env.db.run(
        lambda conn: env.payments.reject(conn, reviewer(), order.id, "收款方可疑")
    )
    assert (rejected.state, rejected.failure_code) == (FAILED, "review_rejected")
    assert rejected.failure_message and "收款方可疑" in rejected.failure_message
    mine = env.balance(alice.account_id)
    assert mine.held == 0 and mine.available == amount + 1_000_000
    assert env.ledger_balance(bob) == 0
    assert net_movement(env, order.id) == {}


def test_review_an_unreviewed_payment_expires_with_its_hold(env: Env, clock: ManualClock) -> None:
    """RISK-5 hook: a payment nobody reviews fails (review_expired) when its hold's
    lifetime is over, and the money is free again."""
    amount = env.p.settings.review_threshold_fen
    alice, _, order = _reviewed(env, amount)
    clock.advance(timedelta(seconds=env.p.settings.payment_hold_ttl_seconds - 1))
    assert env.payments.expire_stale() == 0
    clock.advance(timedelta(seconds=1))
    assert env.p.tick()["expired"] == 1
    expired = env.get(order.id)
    assert (expired.state, expired.failure_code) == (FAILED, "review_expired")
    assert env.balance(alice.account_id).held == 0
    hold = env.db.read(lambda conn: env.p.ledger.hold(conn, order.hold_id or ""))
    assert hold.state is HoldState.EXPIRED


def test_review_an_unreviewed_top_up_expires_too(env: Env, clock: ManualClock) -> None:
    """RISK-5 hook (bug): a review not made in time fails the payment
    (review_expired, docs/payments.md). ``expire_stale`` only looks at the
    hold's expiry, and a top-up under review has no hold, so an unreviewed
    top-up stays ``under_review`` for ever: the customer is never told, the
    queue never clears. Expected: the same deadline as every reviewed payment."""
    alice = env.person("张三")
    order = env.topup(alice, env.p.settings.review_threshold_fen)
    assert order.state is PaymentState.UNDER_REVIEW
    clock.advance(timedelta(seconds=env.p.settings.payment_hold_ttl_seconds))
    env.p.tick()
    expired = env.get(order.id)
    assert (expired.state, expired.failure_code) == (FAILED, "review_expired")
    assert env.available(alice) == 0


# --- fees --------------------------------------------------------------------------------------


def test_fees_are_computed_half_up_and_charged_to_the_right_side(
    env: Env, clock: ManualClock
) -> None:
    """Merchant payments: 0.6% from the merchant; withdrawals: 0.1%, at least 0.10,
    at most 25.00, on top for the payer; half a fen rounds up; fee income
    holds exactly the fees charged."""
    alice = env.person("张三", topup=8_000_000)
    shop = env.merchant()
    fees_before = env.fee_income()
    merchant_cases = {1_250: 8, 1_249: 7, 83: 0, 84: 1, 10_000: 60, 99_999: 600}
    withdrawal_cases = {
        1: 10,
        10_000: 10,
        10_050: 10,
        10_500: 11,
        50_000: 50,
        2_500_000: 2_500,
        3_000_000: 2_500,
    }
    charged = 0
    for amount, fee in merchant_cases.items():
        shop_before, mine_before = env.ledger_balance(shop), env.ledger_balance(alice)
        order = env.buy(alice, shop, amount)
        assert order.fee == fee, amount
        assert env.ledger_balance(shop) == shop_before + amount - fee
        assert env.ledger_balance(alice) == mine_before - amount
        charged += fee
    for amount, fee in withdrawal_cases.items():
        mine_before = env.ledger_balance(alice)
        order = env.withdraw(alice, amount)
        if order.state is PaymentState.AWAITING_VERIFICATION:
            order = env.enter_code(alice, order)
        assert order.fee == fee, amount
        assert env.ledger_balance(alice) == mine_before - amount - fee
        charged += fee
    clock.advance(timedelta(minutes=2))
    env.p.tick()  # withdrawal fees are earned when the bank settles
    assert env.transit().ledger == 0
    assert env.fee_income() == fees_before + charged


# --- PAY-13: the books after a long mixed day ---------------------------------------------------


def test_pay13_repeated_bank_calls_book_each_payment_once(env: Env, clock: ManualClock) -> None:
    """PAY-13: a bank payment whose instruction is sent again (a retry, a crash
    repaired by ``sync_bank``, a second background round) is still booked
    exactly once: no duplicate credit, no duplicate debit."""
    alice = env.person("张三", bank_balance=1_000_000)
    bank = env.p.simulated_bank()
    # A crash right after commit: the top-up is processing, the bank has not heard of it.
    topup = env.pay(alice, PaymentRequest(TOPUP, 300_000, card_id=alice.card_id))
    assert topup.state is PaymentState.PROCESSING and bank.status(topup.id) is None
    assert env.p.tick()["bank_updates"] == 1  # the background round sends it
    for _ in range(3):
        assert env.payments.submit_to_bank(topup.id).state is SUCCEEDED
        env.p.tick()
    assert env.available(alice) == 300_000
    assert bank.card_balance(alice.card_number or "") == 700_000
    withdrawal = env.withdraw(alice, 80_000)
    for _ in range(3):
        env.payments.submit_to_bank(withdrawal.id)
        env.p.tick()
    assert env.ledger_balance(alice) == 300_000 - 80_080
    clock.advance(timedelta(minutes=2))
    for _ in range(3):
        env.p.tick()
        env.payments.submit_to_bank(withdrawal.id)
    assert env.get(withdrawal.id).state is SUCCEEDED
    assert env.ledger_balance(alice) == 300_000 - 80_080
    assert bank.card_balance(alice.card_number or "") == 780_000
    for order in (env.get(topup.id), env.get(withdrawal.id)):
        assert net_movement(env, order.id) == expected_movement(env, order)
    assert env.transit().ledger == 0


def test_pay13_every_payment_moves_exactly_its_split(env: Env, clock: ManualClock) -> None:
    """PAY-13: after a long mixed scenario every succeeded payment is booked under
    its id and moves exactly its split (no duplicate debit), failed and
    cancelled ones net to nothing, fee income is the sum of the fees, and the
    ledger verifies."""
    people = [env.person(name, topup=2_000_000) for name in ("张三", "李四", "王五", "赵六")]
    shops = [env.merchant("通宝咖啡"), env.merchant("通宝书店")]
    fees_before = env.fee_income()
    bank = env.p.simulated_bank()
    ids: list[str] = []
    actions: list[Callable[[], PaymentOrder | None]] = []
    for i in range(24):
        payer, payee = people[(i // 8 + i) % 4], people[(i // 8 + i + 1) % 4]
        shop = shops[i % 2]
        step = i % 8
        if step == 0:
            actions.append(lambda p=payer, q=payee, n=i: env.transfer(p, q, 1_000 + n))
        elif step == 1:
            actions.append(lambda p=payer, s=shop, n=i: env.buy(p, s, 5_000 + n))
        elif step == 2:
            actions.append(lambda p=payer, n=i: env.withdraw(p, 20_000 + n))
        elif step == 3:
            actions.append(lambda p=payer, n=i: env.topup(p, 3_000 + n))
        elif step == 4:  # a large transfer: the code is entered

            def verified(p: Person = payer, q: Person = payee) -> PaymentOrder:
                order = env.transfer(p, q, 150_000)
                code = env.code_for(p)
                return env.db.run(
                    lambda conn: env.payments.verify(conn, p.customer, order.id, code)
                ).order

            actions.append(verified)
        elif step == 5:  # a quote, then cancelled

            def cancelled(p: Person = payer, s: Person = shop) -> PaymentOrder:
                quote = env.create(p, PaymentRequest(MERCHANT, 7_000, s.account_id))
                return env.db.run(lambda conn: env.payments.cancel(conn, p.customer, quote.id))

            actions.append(cancelled)
        elif step == 6:  # a wrong code too many times

            def locked_out(p: Person = payer, q: Person = payee) -> PaymentOrder:
                order = env.transfer(p, q, 120_000)
                right = env.code_for(p)
                wrong = "000000" if right != "000000" else "999999"
                result = None
                for _ in range(env.p.settings.verification_max_attempts):
                    result = env.db.run(
                        lambda conn: env.payments.verify(conn, p.customer, order.id, wrong)
                    )
                assert result is not None
                return result.order

            actions.append(locked_out)
        else:  # a merchant refund of the newest purchase, then a next-day payment

            def refund_and_schedule(p: Person = payer, q: Person = payee) -> PaymentOrder:
                purchase = next(
                    o
                    for o in (env.get(i) for i in reversed(ids))
                    if o.kind is MERCHANT and o.state is SUCCEEDED
                )
                merchant = next(s for s in shops if s.account_id == purchase.payee_account_id)
                refund = env.db.run(
                    lambda conn: env.payments.refund(conn, merchant.customer, purchase.id, 1_234)
                )
                ids.append(refund.id)
                return env.transfer(p, q, 4_321, mode=Mode.NEXT_DAY)

            actions.append(refund_and_schedule)
    for action in actions:
        order = action()
        if order is not None:
            ids.append(order.id)
        clock.advance(timedelta(minutes=7))
    bank.set_card_status(people[2].card_number or "", "closed")  # one withdrawal fails
    clock.set(datetime(2026, 11, 24, 9, 30, tzinfo=SHANGHAI))  # next-day payments are due
    env.p.tick()
    env.p.tick()

    fee_account = env.internal(FEE_INCOME)
    fees = 0
    states: dict[PaymentState, int] = defaultdict(int)
    for payment_id in ids:
        order = env.get(payment_id)
        states[order.state] += 1
        moved = net_movement(env, payment_id)
        if order.state is SUCCEEDED:
            assert moved == expected_movement(env, order), order.kind
            debits = [
                p.amount
                for e in env.db.read(lambda conn, i=payment_id: env.p.ledger.entries_for(conn, i))
                for p in e.postings
                if p.account_id == order.payer_account_id and p.amount > 0
            ]
            assert sum(debits) == order.split.debit, f"{order.kind} debited {debits}"
            fees += order.fee
        else:
            assert order.state in (FAILED, PaymentState.CANCELLED), order.state
            assert moved == {}, (order.kind, order.failure_code, moved)
        assert fee_account not in moved or order.state is SUCCEEDED
    assert dict(states) == {SUCCEEDED: 20, FAILED: 4, PaymentState.CANCELLED: 3}
    assert env.fee_income() == fees_before + fees
    assert env.transit().ledger == 0
    for person in people:
        assert env.balance(person.account_id).held == 0
    env.assert_ledger_ok()
