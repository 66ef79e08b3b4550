"""Error transactions and expired reservations (PAY-13, PAY-11, PAY-6).

PAY-13: wrong or duplicate debits are detected (``verify_payments``, ``tongbao
tx verify``) and can be corrected with a reversal; reservations that run out
never leave money in limbo.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Connection
from stdnum import luhn

from tongbao.banking import Instruction, InstructionDirection
from tongbao.customers import Customer, CustomerKind
from tongbao.ledger import HoldState, transfer_postings, verify_ledger
from tongbao.payments import Mode, PaymentKind, PaymentRequest, PaymentState
from tongbao.payments.verify import verify_payments
from tongbao.platform import Platform


def _customer(platform: Platform, name: str, funds: int = 0) -> Customer:
    def create(conn: Connection) -> Customer:
        customer = platform.customers.register(
            conn,
            kind=CustomerKind.PERSON,
            name=name,
            policy_version=platform.settings.privacy_policy_version,
        )
        if funds:
            clearing = platform.ledger.account_id_by_code(conn, "bank_clearing:SIMBANK")
            platform.ledger.transfer(conn, transfer_postings(clearing, customer.account_id, funds))
        return customer

    return platform.db.run(create)


def _balance(platform: Platform, account_id: str) -> int:
    return platform.db.read(lambda conn: platform.ledger.balance(conn, account_id)).available


def test_pay13_a_duplicate_debit_is_detected_and_a_reversal_corrects_it(platform) -> None:
    payer, payee = _customer(platform, "甲", 100_000), _customer(platform, "乙")
    order = platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            payer,
            PaymentRequest(
                kind=PaymentKind.TRANSFER,
                amount=5_000,
                payee_account_id=payee.account_id,
                payee_name="乙",
            ),
        )
    )
    assert platform.db.read(lambda conn: verify_payments(conn, platform.ledger)).ok

    # A bug or an operator posts the same debit a second time under the payment's id.
    duplicate = platform.db.run(
        lambda conn: platform.ledger.transfer(
            conn,
            transfer_postings(payer.account_id, payee.account_id, 5_000),
            reference=order.id,
            description="duplicate",
        )
    )
    report = platform.db.read(lambda conn: verify_payments(conn, platform.ledger))
    assert [e.payment_id for e in report.errors] == [order.id]
    assert report.errors[0].actual[payer.account_id] == 10_000
    assert report.error_rate == 1.0

    platform.db.run(
        lambda conn: platform.ledger.reverse(conn, duplicate.id, description="PAY-13 correction")
    )
    assert platform.db.read(lambda conn: verify_payments(conn, platform.ledger)).ok
    assert _balance(platform, payer.account_id) == 95_000
    assert platform.db.read(verify_ledger).ok


def test_pay11_a_scheduled_payment_whose_hold_ran_out_fails_and_releases(platform, clock) -> None:
    payer, payee = _customer(platform, "丙", 100_000), _customer(platform, "丁")
    order = platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            payer,
            PaymentRequest(
                kind=PaymentKind.TRANSFER,
                amount=3_000,
                payee_account_id=payee.account_id,
                payee_name="丁",
                mode=Mode.SCHEDULED,
                execute_at=clock.now() + timedelta(hours=1),
            ),
        )
    )
    assert order.state is PaymentState.PROCESSING
    assert _balance(platform, payer.account_id) == 97_000
    # The background loop was down far past the payment's time and the hold's lifetime.
    clock.advance(timedelta(hours=1, seconds=platform.settings.payment_hold_ttl_seconds + 1))
    assert platform.payments.run_due() == 1
    failed = platform.db.read(lambda conn: platform.payments.get(conn, order.id))
    assert (failed.state, failed.failure_code) == (PaymentState.FAILED, "hold_expired")
    hold = platform.db.read(lambda conn: platform.ledger.hold(conn, order.hold_id or ""))
    assert hold.state is HoldState.EXPIRED
    assert _balance(platform, payer.account_id) == 100_000
    assert _balance(platform, payee.account_id) == 0
    assert platform.db.read(verify_ledger).ok


def _card(platform: Platform, customer: Customer, balance: int = 0) -> str:
    number = "622202" + f"{abs(hash(customer.id)) % 10**12:012d}"
    number += luhn.calc_check_digit(number)
    expires = date(2030, 12, 31)
    platform.simulated_bank().open_card(
        card_number=number,
        holder_name=customer.name,
        phone="13700000000",
        balance=balance,
        expires_on=expires,
    )
    return platform.customers.bind_card(
        platform.db,
        customer.id,
        bank_code="SIMBANK",
        card_number=number,
        holder_name=customer.name,
        phone="13700000000",
        expires_on=expires,
    ).id


def _withdrawal_after_its_hold_ran_out(
    platform: Platform, clock, *, reached_the_bank: bool
) -> tuple[Customer, str]:
    """A customer with 1,000.00 whose 500.00 withdrawal stalls (the process
    hangs) until its hold has expired and been swept; with
    ``reached_the_bank`` the instruction had been sent just before the stall."""
    funder = _customer(platform, "己")
    funder_card = _card(platform, funder, 1_000_000)  # the bank works in its own transactions
    topup = platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            funder,
            PaymentRequest(kind=PaymentKind.TOPUP, amount=500_000, card_id=funder_card),
        )
    )
    assert platform.payments.submit_to_bank(topup.id).state is PaymentState.SUCCEEDED  # reserve

    customer = _customer(platform, "戊", 100_000)
    card_id = _card(platform, customer)
    order = platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            customer,
            PaymentRequest(kind=PaymentKind.WITHDRAWAL, amount=50_000, card_id=card_id),
        )
    )
    assert order.state is PaymentState.PROCESSING and order.bank_reference is None
    if reached_the_bank:
        card = platform.db.read(lambda conn: platform.customers.card(conn, customer.id, card_id))
        instruction = Instruction(
            order.id,
            InstructionDirection.CREDIT,
            card.agreement_id,
            order.split.credit,
            "x",
            card.bank_code,
        )
        platform.simulated_bank().submit(platform.instruction_signer.sign(instruction, clock.now()))
    clock.advance(timedelta(seconds=platform.settings.payment_hold_ttl_seconds + 1))
    assert platform.db.read(platform.ledger.due_holds) == [order.hold_id]
    platform.db.run(lambda conn: platform.ledger.expire_hold(conn, order.hold_id or ""))
    assert _balance(platform, customer.account_id) == 100_000
    return customer, order.id


def test_pay6_a_withdrawal_not_yet_sent_whose_hold_ran_out_is_given_up(platform, clock) -> None:
    customer, payment_id = _withdrawal_after_its_hold_ran_out(
        platform, clock, reached_the_bank=False
    )
    platform.tick()  # the bank sync finds nothing at the bank and gives up
    after = platform.db.read(lambda conn: platform.payments.get(conn, payment_id))
    assert (after.state, after.failure_code) == (PaymentState.FAILED, "hold_expired")
    assert platform.simulated_bank().status(payment_id) is None  # never sent
    assert _balance(platform, customer.account_id) == 100_000
    assert platform.db.read(verify_ledger).ok
    assert platform.db.read(lambda conn: verify_payments(conn, platform.ledger)).ok


def test_pay13_a_bank_accepted_withdrawal_with_a_spent_wallet_goes_to_suspense(
    platform, clock
) -> None:
    customer, payment_id = _withdrawal_after_its_hold_ran_out(
        platform, clock, reached_the_bank=True
    )
    order = platform.db.read(lambda conn: platform.payments.get(conn, payment_id))
    # The customer spends the released money before the platform hears from the bank.
    other = _customer(platform, "庚")
    platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            customer,
            PaymentRequest(
                kind=PaymentKind.TRANSFER,
                amount=90_000,
                payee_account_id=other.account_id,
                payee_name="庚",
            ),
        )
    )

    recorded = platform.payments.submit_to_bank(payment_id)
    assert recorded.state is PaymentState.PROCESSING, (
        recorded.failure_code,
        recorded.failure_message,
    )
    assert recorded.bank_reference
    assert _balance(platform, customer.account_id) == 10_000  # not overdrawn
    clock.advance(timedelta(minutes=5))
    platform.tick()  # the bank settles; the payment completes
    done = platform.db.read(lambda conn: platform.payments.get(conn, payment_id))
    assert done.state is PaymentState.SUCCEEDED
    assert platform.db.read(verify_ledger).ok  # the books balance …
    report = platform.db.read(lambda conn: verify_payments(conn, platform.ledger))
    assert [e.payment_id for e in report.errors] == [payment_id]  # … and PAY-13 flags it
    suspense = platform.db.read(lambda conn: platform.ledger.account_id_by_code(conn, "suspense"))
    assert report.errors[0].actual[suspense] == order.split.debit
    events = platform.db.read(lambda conn: platform.payments.events(conn, payment_id))
    assert any("suspense" in (e.note or "") for e in events)
