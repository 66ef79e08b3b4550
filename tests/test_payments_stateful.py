"""A hypothesis state machine drives the payment service and a model side by side.

The model is written from the business rules alone (who pays whom, fee rates,
the payee-name rule, what a refund may return, what a replayed request does),
not from :mod:`tongbao.payments`: every wallet and merchant account is two
integers (balance, held), every payment a small record. Random steps:
top-ups, transfers (with the payee's name given right, differently spaced,
wrong, or not at all), merchant payments, large transfers waiting for their
one-time code (entered right or wrong, or cancelled), quotes confirmed or
cancelled, partial refunds, and requests sent through the idempotency layer
and REPLAYED with the same key — a replay must answer with the same payment
and move no money; the same key with another request is refused.

After every step each account's balance and hold, the fee income and every
payment's state must equal the model's; at teardown every succeeded payment's
ledger entries must move exactly its split, the others nothing, and
``verify_ledger`` must find nothing wrong.

Runs on SQLite and PostgreSQL (the ``platform`` fixture, shared by the
examples: each example registers customers of its own).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, select

from tests.payment_helpers import (
    CODE_IN_SMS,
    Env,
    Person,
    expected_movement,
    net_movement,
)
from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.idempotency import Outcome, request_hash
from tongbao.ledger import verify_ledger
from tongbao.payments import PaymentKind, PaymentRequest, PaymentState, Scenario
from tongbao.payments import tables as pt
from tongbao.platform import Platform

PEOPLE = ("Zhang San", "Li Si", "Wang Wu")
SHOPS = ("Coffee", "Books")
THRESHOLD = 100_000  # the default verification threshold; the test settings keep it
MAX_ATTEMPTS = 5
SMALL = st.integers(1, THRESHOLD - 1)
SEED = 800_000  # each person starts with 8,000.00 yuan

_examples = itertools.count()
T = TypeVar("T")


def merchant_fee(amount: int) -> int:
    """0.6 % of the amount, half a fen and more rounding up."""
    return int((Decimal(amount) * Decimal("0.006")).quantize(Decimal(1), ROUND_HALF_UP))


def spaced(name: str) -> str:
    """The same name typed carelessly: other spacing, other case."""
    return "  " + "  ".join(name.upper().split()) + " "


@dataclass
class Wallet:
    balance: int = 0
    held: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass
class Payment:
    kind: str
    payer: str
    payee: str
    amount: int
    fee: int = 0
    state: str = "succeeded"
    refunded: int = 0
    code: str | None = None
    attempts: int = 0


class PaymentMachine(RuleBasedStateMachine):
    purchases = Bundle("purchases")
    waiting = Bundle("waiting")
    quotes = Bundle("quotes")
    keys = Bundle("keys")

    def __init__(self, platform: Platform, clock: ManualClock) -> None:
        super().__init__()
        self.env = Env(platform)
        self.p = platform
        self.clock = clock
        self.example = next(_examples)
        self.wallets: dict[str, Wallet] = {}
        self.who: dict[str, Person] = {}
        self.payments: dict[str, Payment] = {}
        self.familiar: set[tuple[str, str]] = set()
        self.fees = 0
        self.fee_base = 0
        self.keys_used = itertools.count()
        self.stored_keys: dict[str, tuple[str, str, str]] = {}  # key -> (payer, fp, order)

    # --- setup ---------------------------------------------------------------------

    @initialize()
    def open_accounts(self) -> None:
        for name in PEOPLE:
            person = self.env.person(name, topup=SEED, bank_balance=100_000_000)
            self.who[name] = person
            self.wallets[name] = Wallet(balance=SEED)
        for name in SHOPS:
            self.who[name] = self.env.merchant(name)
            self.wallets[name] = Wallet()
        self.fee_base = self.env.fee_income()

    def _step(self) -> None:
        # Time moves on a little with every request (serials differ by the millisecond).
        self.clock.advance(timedelta(milliseconds=3))

    def _expect(self, refusal: type[Exception] | None, call: Callable[[], T]) -> T | None:
        try:
            result = call()
        except errors.TongbaoError as exc:
            assert refusal is not None and isinstance(exc, refusal), (exc, refusal)
            event(f"refused: {exc.code}")
            return None
        assert refusal is None, f"expected {refusal.__name__}, got {result}"
        return result

    def _move(self, payer: str, payee: str, debit: int, credit: int) -> None:
        self.wallets[payer].balance -= debit
        self.wallets[payee].balance += credit
        self.fees += debit - credit

    # --- money in ----------------------------------------------------------------------

    @rule(who=st.sampled_from(PEOPLE), amount=st.integers(1, 400_000))
    def top_up(self, who: str, amount: int) -> None:
        self._step()
        order = self.env.topup(self.who[who], amount)
        assert order.state is PaymentState.SUCCEEDED, order
        self.wallets[who].balance += amount
        self.payments[order.id] = Payment("topup", "bank", who, amount)

    # --- transfers and purchases ---------------------------------------------------------

    def _transfer_refusal(
        self, payer: str, payee: str, how: str, amount: int
    ) -> type[Exception] | None:
        if how == "wrong":
            return errors.PayeeNameMismatch
        if how == "none" and (payer, payee) not in self.familiar:
            return errors.PayeeNameRequired
        if amount > self.wallets[payer].available:
            return errors.InsufficientFunds
        return None

    def _transfer_request(self, payee: str, how: str, amount: int) -> PaymentRequest:
        name = {"right": payee, "spaced": spaced(payee), "wrong": payee + " Jr", "none": None}
        return PaymentRequest(
            PaymentKind.TRANSFER,
            amount,
            self.who[payee].account_id,
            payee_name=name[how],
        )

    @rule(
        pair=st.permutations(PEOPLE).map(lambda p: (p[0], p[1])),
        how=st.sampled_from(["right", "spaced", "wrong", "none", "none"]),
        amount=SMALL,
    )
    def transfer(self, pair: tuple[str, str], how: str, amount: int) -> None:
        self._step()
        payer, payee = pair
        refusal = self._transfer_refusal(payer, payee, how, amount)
        request = self._transfer_request(payee, how, amount)
        order = self._expect(refusal, lambda: self.env.pay(self.who[payer], request))
        if order is not None:
            self._move(payer, payee, amount, amount)
            self.familiar.add((payer, payee))
            self.payments[order.id] = Payment("transfer", payer, payee, amount)
            event(f"transfer with name {how}")

    @rule(
        target=purchases,
        payer=st.sampled_from(PEOPLE),
        shop=st.sampled_from(SHOPS),
        amount=SMALL,
        scenario=st.sampled_from([Scenario.CONSUMPTION, Scenario.QR_CODE, Scenario.BILL_PAYMENT]),
    )
    def buy(self, payer: str, shop: str, amount: int, scenario: Scenario) -> object:
        self._step()
        refusal = errors.InsufficientFunds if amount > self.wallets[payer].available else None
        request = PaymentRequest(
            PaymentKind.MERCHANT_PAYMENT, amount, self.who[shop].account_id, scenario=scenario
        )
        order = self._expect(refusal, lambda: self.env.pay(self.who[payer], request))
        if order is None:
            return multiple()
        fee = merchant_fee(amount)
        assert order.fee == fee
        self._move(payer, shop, amount, amount - fee)
        self.payments[order.id] = Payment("merchant_payment", payer, shop, amount, fee)
        return order.id

    @rule(purchase=purchases, part=st.integers(1, THRESHOLD))
    def refund(self, purchase: str, part: int) -> None:
        self._step()
        paid = self.payments[purchase]
        left = paid.amount - paid.refunded
        amount = part if part <= paid.amount else left  # now and then exactly the rest
        refusal: type[Exception] | None = None
        if amount == 0:  # nothing left to refund
            refusal = errors.InvalidAmount
        elif amount > left:
            refusal = errors.RefundExceedsPayment
        elif amount > self.wallets[paid.payee].available:
            refusal = errors.InsufficientFunds
        shop = self.who[paid.payee]
        refund = self._expect(
            refusal,
            lambda: self.env.db.run(
                lambda conn: self.p.payments.refund(conn, shop.customer, purchase, amount)
            ),
        )
        if refund is not None:
            paid.refunded += amount
            self._move(paid.payee, paid.payer, amount, amount)
            self.payments[refund.id] = Payment("refund", paid.payee, paid.payer, amount)
            event("refund" + (" (all)" if paid.refunded == paid.amount else ""))

    # --- large transfers: the one-time code ------------------------------------------------

    @rule(
        target=waiting,
        pair=st.permutations(PEOPLE).map(lambda p: (p[0], p[1])),
        amount=st.integers(THRESHOLD, 3 * THRESHOLD),
    )
    def large_transfer(self, pair: tuple[str, str], amount: int) -> object:
        self._step()
        payer, payee = pair
        refusal = errors.InsufficientFunds if amount > self.wallets[payer].available else None
        request = self._transfer_request(payee, "right", amount)
        order = self._expect(refusal, lambda: self.env.pay(self.who[payer], request))
        if order is None:
            return multiple()
        assert order.state is PaymentState.AWAITING_VERIFICATION
        sms = self.env.messages(self.who[payer])[-1]
        match = CODE_IN_SMS.search(sms.text)
        assert sms.kind == "verification_code" and match, sms
        self.wallets[payer].held += amount
        self.payments[order.id] = Payment(
            "transfer", payer, payee, amount, state="awaiting_verification", code=match.group(1)
        )
        return order.id

    @rule(payment_id=waiting, wrong=st.integers(0, MAX_ATTEMPTS))
    def enter_code(self, payment_id: str, wrong: int) -> None:
        """``wrong`` mistyped codes, then (if the payment still waits) the right one."""
        self._step()
        pay = self.payments[payment_id]
        assert pay.code is not None
        customer = self.who[pay.payer].customer
        for attempt in range(wrong + 1):
            right = attempt == wrong
            code = pay.code if right else f"{(int(pay.code) + 1 + attempt) % 1_000_000:06d}"
            refusal = None if pay.state == "awaiting_verification" else errors.InvalidTransition
            result = self._expect(
                refusal,
                lambda c=code: self.env.db.run(  # type: ignore[misc]
                    lambda conn: self.p.payments.verify(conn, customer, payment_id, c)
                ),
            )
            if result is None:
                return
            assert result.accepted is right
            if right:
                pay.state = "succeeded"
                self.wallets[pay.payer].held -= pay.amount
                self._move(pay.payer, pay.payee, pay.amount, pay.amount)
                self.familiar.add((pay.payer, pay.payee))
                event("code right" + (" after wrong ones" if wrong else ""))
                return
            pay.attempts += 1
            assert result.attempts_left == MAX_ATTEMPTS - pay.attempts
            assert result.order.state.value == (
                "failed" if pay.attempts == MAX_ATTEMPTS else "awaiting_verification"
            )
            if pay.attempts == MAX_ATTEMPTS:
                pay.state = "failed"
                self.wallets[pay.payer].held -= pay.amount
                event("locked out")

    # --- quotes --------------------------------------------------------------------------

    @rule(
        target=quotes,
        payer=st.sampled_from(PEOPLE),
        payee=st.sampled_from(PEOPLE + SHOPS),
        amount=SMALL,
    )
    def quote(self, payer: str, payee: str, amount: int) -> object:
        self._step()
        if payee == payer:
            request = self._transfer_request(payee, "right", amount)
            self._expect(errors.SamePayerPayee, lambda: self.env.create(self.who[payer], request))
            return multiple()
        if payee in SHOPS:
            request = PaymentRequest(
                PaymentKind.MERCHANT_PAYMENT, amount, self.who[payee].account_id
            )
            kind, fee = "merchant_payment", merchant_fee(amount)
        else:
            request = self._transfer_request(payee, "right", amount)
            kind, fee = "transfer", 0
        order = self.env.create(self.who[payer], request)
        assert (order.state, order.amount, order.fee) == (PaymentState.CREATED, amount, fee)
        assert (order.split.debit, order.split.credit) == (amount, amount - fee)
        self.payments[order.id] = Payment(kind, payer, payee, amount, fee, state="created")
        return order.id

    @rule(payment_id=quotes)
    def confirm(self, payment_id: str) -> None:
        self._step()
        pay = self.payments[payment_id]
        refusal: type[Exception] | None = None
        if pay.state != "created":
            refusal = errors.InvalidTransition
        elif pay.amount > self.wallets[pay.payer].available:
            refusal = errors.InsufficientFunds
        order = self._expect(refusal, lambda: self.env.confirm(self.who[pay.payer], payment_id))
        if order is not None:
            pay.state = "succeeded"
            self._move(pay.payer, pay.payee, pay.amount, pay.amount - pay.fee)
            if pay.kind == "transfer":
                self.familiar.add((pay.payer, pay.payee))

    @rule(payment_id=st.one_of(quotes, waiting))
    def cancel(self, payment_id: str) -> None:
        self._step()
        pay = self.payments[payment_id]
        pending = pay.state in ("created", "awaiting_verification")
        customer = self.who[pay.payer].customer
        order = self._expect(
            None if pending else errors.InvalidTransition,
            lambda: self.env.db.run(
                lambda conn: self.p.payments.cancel(conn, customer, payment_id)
            ),
        )
        if order is not None:
            if pay.state == "awaiting_verification":
                self.wallets[pay.payer].held -= pay.amount
            pay.state = "cancelled"
            event("cancelled")

    # --- idempotent requests and their replays -------------------------------------------

    def _idempotent(
        self, payer: str, key: str, request: PaymentRequest, fingerprint: str
    ) -> Outcome:
        customer = self.who[payer].customer
        return self.p.idempotency.run(
            principal_id=customer.id,
            key=key,
            method="POST",
            path="/x",
            fingerprint=fingerprint,
            operation=lambda conn: (201, self.p.payments.pay(conn, customer, request).id),
        )

    def _keyed_request(self, payer: str, payee: str, amount: int) -> PaymentRequest:
        if payee in SHOPS:
            return PaymentRequest(PaymentKind.MERCHANT_PAYMENT, amount, self.who[payee].account_id)
        return self._transfer_request(payee, "right", amount)

    @rule(
        target=keys,
        payer=st.sampled_from(PEOPLE),
        payee=st.sampled_from(PEOPLE + SHOPS),
        amount=SMALL,
    )
    def keyed_payment(self, payer: str, payee: str, amount: int) -> object:
        self._step()
        if payee == payer:
            return multiple()
        key = f"key-{self.example}-{next(self.keys_used)}"
        fingerprint = request_hash("POST", "/x", f"{payee}:{amount}".encode())
        request = self._keyed_request(payer, payee, amount)
        refusal = errors.InsufficientFunds if amount > self.wallets[payer].available else None
        outcome = self._expect(refusal, lambda: self._idempotent(payer, key, request, fingerprint))
        if outcome is None:
            return multiple()  # a refusal stores nothing: the key is free again
        assert not outcome.replayed and outcome.status_code == 201
        order_id: str = outcome.body
        fee = merchant_fee(amount) if payee in SHOPS else 0
        kind = "merchant_payment" if payee in SHOPS else "transfer"
        self._move(payer, payee, amount, amount - fee)
        if kind == "transfer":
            self.familiar.add((payer, payee))
        self.payments[order_id] = Payment(kind, payer, payee, amount, fee)
        self.stored_keys[key] = (payer, fingerprint, order_id)
        return key

    @rule(key=keys, same=st.booleans())
    def replay(self, key: str, same: bool) -> None:
        """The client did not hear the answer and sends the request again."""
        self._step()
        payer, fingerprint, order_id = self.stored_keys[key]
        pay = self.payments[order_id]
        request = self._keyed_request(payer, pay.payee, pay.amount)
        if not same:  # the same key with another body is a client bug, refused
            other = request_hash("POST", "/x", f"{pay.payee}:{pay.amount + 1}".encode())
            self._expect(
                errors.IdempotencyKeyReused, lambda: self._idempotent(payer, key, request, other)
            )
            return
        outcome = self._idempotent(payer, key, request, fingerprint)
        assert outcome.replayed and outcome.body == order_id and outcome.status_code == 201
        event("replayed")

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def books_match_the_model(self) -> None:
        if not self.who:
            return
        ids = {name: person.account_id for name, person in self.who.items()}
        payment_ids = list(self.payments)

        def read(conn: Connection) -> tuple[Any, dict[str, str], dict[str, int]]:
            balances = self.p.ledger.balances(conn, list(ids.values()))
            o = pt.payment_orders
            states = (
                dict(conn.execute(select(o.c.id, o.c.state).where(o.c.id.in_(payment_ids))).all())
                if payment_ids
                else {}
            )
            refunded = (
                dict(
                    conn.execute(
                        select(o.c.id, o.c.refunded_amount).where(o.c.id.in_(payment_ids))
                    ).all()
                )
                if payment_ids
                else {}
            )
            return balances, states, refunded

        balances, states, refunded = self.env.db.read(read)
        for name, account_id in ids.items():
            got = balances[account_id]
            want = self.wallets[name]
            assert (got.ledger, got.held, got.available) == (
                want.balance,
                want.held,
                want.available,
            ), name
        assert self.env.fee_income() - self.fee_base == self.fees
        for payment_id, pay in self.payments.items():
            assert states[payment_id] == pay.state, (pay, states[payment_id])
            assert refunded[payment_id] == pay.refunded, pay

    def teardown(self) -> None:
        if not self.who:
            return
        for payment_id in self.payments:
            order = self.env.get(payment_id)
            moved = net_movement(self.env, payment_id)
            if order.state is PaymentState.SUCCEEDED:
                assert moved == expected_movement(self.env, order), order
            else:
                assert moved == {}, order
        report = self.env.db.read(verify_ledger)
        assert report.ok, report.discrepancies


def test_payments_behave_like_the_model(platform: Platform, clock: ManualClock) -> None:
    run_state_machine_as_test(
        lambda: PaymentMachine(platform, clock),
        settings=settings(
            max_examples=15,
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
