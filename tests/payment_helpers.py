"""Helpers for the payment tests: customers with cards and money, balances,
row counts, notifications — all through the platform's public services."""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, select, update
from stdnum import luhn

from tongbao.auth import Principal, PrincipalType
from tongbao.customers import Customer, CustomerKind
from tongbao.customers import tables as customer_tables
from tongbao.ledger import AccountBalance, AccountStatus, verify_ledger
from tongbao.ledger import tables as lt
from tongbao.notifications import LocalMessage
from tongbao.payments import PaymentKind, PaymentOrder, PaymentRequest
from tongbao.payments import tables as pt
from tongbao.payments.service import FEE_INCOME, TRANSIT, bank_clearing_code
from tongbao.platform import SIMULATED_BANK, Platform

CARD_EXPIRY = date(2030, 12, 31)
TOPUP_PIECE = 4_000_000
"""Top-ups of 50,000.00 yuan or more wait for review; seed money comes in smaller pieces."""
CODE_IN_SMS = re.compile(r"验证码(\d{6})")


def card_number() -> str:
    """A fresh 19-digit UnionPay-style number with a valid Luhn check digit."""
    body = "622202" + f"{secrets.randbelow(10**12):012d}"
    return body + luhn.calc_check_digit(body)


@dataclass(frozen=True)
class Person:
    customer: Customer
    card_id: str | None
    card_number: str | None

    @property
    def id(self) -> str:
        return self.customer.id

    @property
    def account_id(self) -> str:
        return self.customer.account_id

    @property
    def name(self) -> str:
        return self.customer.name


class Env:
    """The platform as a payment institution's staff would drive it in a test."""

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self.payments = platform.payments
        self.db = platform.db

    # --- customers, cards, money ---------------------------------------------------

    def register(self, name: str, kind: CustomerKind = CustomerKind.PERSON) -> Customer:
        return self.db.run(
            lambda conn: self.p.customers.register(
                conn,
                kind=kind,
                name=name,
                phone="13800138000",
                policy_version=self.p.settings.privacy_policy_version,
            )
        )

    def merchant(self, name: str = "通宝咖啡") -> Person:
        return Person(self.register(name, CustomerKind.MERCHANT), None, None)

    def bind_card(
        self,
        customer: Customer,
        *,
        bank_balance: int = 10_000_000,
        expires_on: date = CARD_EXPIRY,
    ) -> tuple[str, str]:
        number = card_number()
        self.p.simulated_bank().open_card(
            card_number=number,
            holder_name=customer.name,
            phone="13800138000",
            balance=bank_balance,
            expires_on=expires_on,
        )
        card = self.p.customers.bind_card(
            self.db,
            customer.id,
            bank_code=SIMULATED_BANK,
            card_number=number,
            holder_name=customer.name,
            phone="13800138000",
            expires_on=expires_on,
        )
        return card.id, number

    def person(
        self,
        name: str,
        *,
        topup: int = 0,
        bank_balance: int = 10_000_000,
        expires_on: date = CARD_EXPIRY,
    ) -> Person:
        """A person with a bound card and ``topup`` fen in the wallet."""
        customer = self.register(name)
        card_id, number = self.bind_card(customer, bank_balance=bank_balance, expires_on=expires_on)
        person = Person(customer, card_id, number)
        left = topup
        while left:  # in pieces below the review threshold
            piece = min(left, TOPUP_PIECE)
            order = self.topup(person, piece)
            assert order.state == "succeeded", order
            left -= piece
        return person

    def topup(self, person: Person, amount: int) -> PaymentOrder:
        order = self.pay(
            person,
            PaymentRequest(kind=PaymentKind.TOPUP, amount=amount, card_id=person.card_id),
        )
        return self.payments.submit_to_bank(order.id)

    def withdraw(self, person: Person, amount: int) -> PaymentOrder:
        order = self.pay(
            person,
            PaymentRequest(kind=PaymentKind.WITHDRAWAL, amount=amount, card_id=person.card_id),
        )
        return self.payments.submit_to_bank(order.id)

    def fresh(self, person: Person) -> Person:
        """The person with the customer record re-read (status changes)."""
        customer = self.db.read(lambda conn: self.p.customers.get(conn, person.id))
        return Person(customer, person.card_id, person.card_number)

    def freeze(self, person: Person) -> Person:
        """Freeze a customer and their ledger account. There is no customer-freeze
        service yet (ACC comes later), so the status column is set directly."""

        def fn(conn: Connection) -> None:
            conn.execute(
                update(customer_tables.customers)
                .where(customer_tables.customers.c.id == person.id)
                .values(status="frozen")
            )
            self.p.ledger.set_status(conn, person.account_id, AccountStatus.FROZEN)

        self.db.run(fn)
        return self.fresh(person)

    # --- payments ---------------------------------------------------------------------

    def pay(self, who: Person | Customer, request: PaymentRequest) -> PaymentOrder:
        customer = who.customer if isinstance(who, Person) else who
        return self.db.run(lambda conn: self.payments.pay(conn, customer, request))

    def create(self, who: Person, request: PaymentRequest) -> PaymentOrder:
        return self.db.run(lambda conn: self.payments.create(conn, who.customer, request))

    def confirm(self, who: Person, payment_id: str) -> PaymentOrder:
        return self.db.run(lambda conn: self.payments.confirm(conn, who.customer, payment_id))

    def transfer(
        self, payer: Person, payee: Person, amount: int, *, name: str | None = "", **kw: Any
    ) -> PaymentOrder:
        """A wallet transfer; the payee's name is given unless ``name`` is None."""
        request = PaymentRequest(
            kind=PaymentKind.TRANSFER,
            amount=amount,
            payee_account_id=payee.account_id,
            payee_name=(name or payee.name) if name is not None else None,
            **kw,
        )
        return self.pay(payer, request)

    def buy(self, payer: Person, merchant: Person, amount: int, **kw: Any) -> PaymentOrder:
        request = PaymentRequest(
            kind=PaymentKind.MERCHANT_PAYMENT,
            amount=amount,
            payee_account_id=merchant.account_id,
            **kw,
        )
        return self.pay(payer, request)

    def enter_code(self, who: Person, order: PaymentOrder) -> PaymentOrder:
        """Type in the code from the newest SMS; a bank payment then goes to the bank."""
        code = self.code_for(who)
        result = self.db.run(lambda conn: self.payments.verify(conn, who.customer, order.id, code))
        assert result.accepted, result
        return self.payments.submit_to_bank(order.id)

    def get(self, payment_id: str) -> PaymentOrder:
        return self.db.read(lambda conn: self.payments.get(conn, payment_id))

    # --- views ------------------------------------------------------------------------

    def balance(self, account_id: str) -> AccountBalance:
        return self.db.read(lambda conn: self.p.ledger.balance(conn, account_id))

    def available(self, who: Person) -> int:
        return self.balance(who.account_id).available

    def ledger_balance(self, who: Person) -> int:
        return self.balance(who.account_id).ledger

    def internal(self, code: str) -> str:
        return self.db.read(lambda conn: self.p.ledger.account_id_by_code(conn, code))

    def fee_income(self) -> int:
        return self.balance(self.internal(FEE_INCOME)).ledger

    def transit(self) -> AccountBalance:
        return self.balance(self.internal(TRANSIT))

    def clearing(self) -> AccountBalance:
        return self.balance(self.internal(bank_clearing_code(SIMULATED_BANK)))

    def counts(self) -> dict[str, int]:
        """How many rows payments and the ledger hold: a refusal must add none."""
        tables = {
            "payment_orders": pt.payment_orders,
            "payment_events": pt.payment_events,
            "payment_verifications": pt.payment_verifications,
            "ledger_entries": lt.entries,
            "ledger_postings": lt.postings,
            "ledger_holds": lt.holds,
        }

        def read(conn: Connection) -> dict[str, int]:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in tables.items()
            }

        return self.db.read(read)

    def outbox_count(self) -> int:
        from tongbao.notifications.tables import outbox  # noqa: PLC0415

        return self.db.read(
            lambda conn: int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())
        )

    def dispatch_all(self) -> int:
        """Run the dispatcher until the outbox has nothing due (it sends 100 a round)."""
        sent = 0
        while True:
            report = self.p.notifications.dispatch(self.db)
            if not (report.sent or report.retried or report.failed):
                return sent
            sent += report.sent

    def messages(self, who: Person) -> list[LocalMessage]:
        """Everything delivered to ``who`` so far, oldest first."""
        self.dispatch_all()
        return list(reversed(self.p.local_channel.messages(who.id, limit=100).items))

    def code_for(self, who: Person) -> str:
        """The one-time code from the newest verification SMS."""
        texts = [m.text for m in self.messages(who) if m.kind == "verification_code"]
        assert texts, "no verification SMS was delivered"
        match = CODE_IN_SMS.search(texts[-1])
        assert match, texts[-1]
        return match.group(1)

    def events(self, payment_id: str) -> list[Any]:
        return self.db.read(lambda conn: self.payments.events(conn, payment_id))

    def assert_ledger_ok(self) -> None:
        report = self.db.read(verify_ledger)
        assert report.ok, report.discrepancies


def net_movement(env: Env, payment_id: str) -> dict[str, int]:
    """Signed sum (debit > 0) per account over every entry booked for a payment."""
    entries = env.db.read(lambda conn: env.p.ledger.entries_for(conn, payment_id))
    net: dict[str, int] = defaultdict(int)
    for entry in entries:
        for posting in entry.postings:
            net[posting.account_id] += posting.amount
    return {account: amount for account, amount in net.items() if amount}


def expected_movement(env: Env, order: PaymentOrder) -> dict[str, int]:
    """What a succeeded payment must have moved: its split, nothing else."""
    s = order.split
    moves = {order.payer_account_id: s.debit, order.payee_account_id: -s.credit}
    if s.fee:
        moves[env.internal(FEE_INCOME)] = -s.fee
    return moves


def reviewer() -> Principal:
    return Principal(PrincipalType.STAFF, "staff_reviewer", frozenset({"reviewer"}))
