"""Customers, their ledger account and their bound bank cards.

Registration with real-name verification (ACC-1 … ACC-6) comes with a later
issue; here a customer is created by staff tooling or the demo seed, gets a
wallet (person) or merchant account (merchant) in the ledger, and can bind
bank cards through the bank channel's quick-pay agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, insert, select, update

from tongbao import errors
from tongbao.banking import BankChannel, CardVerification
from tongbao.clock import Clock, business_date
from tongbao.customers import bankcard
from tongbao.customers import tables as t
from tongbao.ids import new_id
from tongbao.ledger import AccountType, Ledger
from tongbao.storage import Database, is_unique_violation
from tongbao.storage.prepared import Prepared


class CustomerKind(StrEnum):
    PERSON = "person"
    MERCHANT = "merchant"


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    kind: CustomerKind
    name: str
    phone: str | None
    status: CustomerStatus
    account_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BankCard:
    id: str
    customer_id: str
    bank_code: str
    card_last4: str
    holder_name: str
    expires_on: date
    agreement_id: str
    status: str
    created_at: datetime

    @property
    def masked_number(self) -> str:
        return f"**** **** **** {self.card_last4}"

    def expired(self, today: date) -> bool:
        return today > self.expires_on


# Read on every request and payment, so compiled once (see storage.prepared).
_BY_ID = Prepared(select(t.customers).where(t.customers.c.id == bindparam("p_id")))
_BY_ACCOUNT = Prepared(
    select(t.customers).where(t.customers.c.account_id == bindparam("p_account"))
)


class Customers:
    def __init__(self, ledger: Ledger, clock: Clock, banks: Mapping[str, BankChannel]) -> None:
        self.ledger = ledger
        self.clock = clock
        self.banks = banks

    # --- customers -------------------------------------------------------------

    def register(
        self, conn: Connection, *, kind: CustomerKind, name: str, phone: str | None = None
    ) -> Customer:
        if not name.strip():
            raise errors.ValidationFailed("a customer needs a name")
        customer_id = new_id("cus")
        account_type = (
            AccountType.MERCHANT if kind is CustomerKind.MERCHANT else AccountType.CUSTOMER_WALLET
        )
        account = self.ledger.open_account(
            conn, account_type, name=f"{kind.value} {name}", owner_id=customer_id
        )
        now = self.clock.now()
        conn.execute(
            insert(t.customers),
            {
                "id": customer_id,
                "kind": kind.value,
                "name": name.strip(),
                "phone": phone,
                "status": CustomerStatus.ACTIVE.value,
                "account_id": account.id,
                "created_at": now,
            },
        )
        return Customer(
            customer_id, kind, name.strip(), phone, CustomerStatus.ACTIVE, account.id, now
        )

    def get(self, conn: Connection, customer_id: str) -> Customer:
        row = _BY_ID.first(conn, {"p_id": customer_id})
        if row is None:
            raise errors.NotFound(f"no customer {customer_id}")
        return _customer(row)

    def by_account(self, conn: Connection, account_id: str) -> Customer | None:
        row = _BY_ACCOUNT.first(conn, {"p_account": account_id})
        return None if row is None else _customer(row)

    def search(self, conn: Connection, *, limit: int = 100) -> list[Customer]:
        rows = conn.execute(select(t.customers).order_by(t.customers.c.id).limit(limit))
        return [_customer(r._mapping) for r in rows]

    # --- bank cards (ACC-6, PAY-2) ------------------------------------------------

    def bind_card(
        self,
        db: Database,
        customer_id: str,
        *,
        bank_code: str,
        card_number: str,
        holder_name: str,
        phone: str,
        expires_on: date,
    ) -> BankCard:
        """Sign a quick-pay agreement with the bank, then record the card.

        The bank is called outside any transaction; if recording fails the
        agreement is cancelled again, so no orphan agreement stays behind.
        """
        number = bankcard.validate(card_number)
        bank = self.banks.get(bank_code)
        if bank is None:
            raise errors.ValidationFailed(
                f"unknown bank {bank_code!r}; known: {', '.join(sorted(self.banks))}"
            )
        customer = db.read(lambda conn: self.get(conn, customer_id))
        if customer.status is CustomerStatus.CLOSED:
            raise errors.Forbidden("a closed customer cannot bind cards")
        if db.read(lambda conn: self._bound(conn, customer_id, number)):
            raise errors.CardAlreadyExists(f"card {bankcard.mask(number)} is already bound")
        agreement = bank.sign_agreement(CardVerification(number, holder_name, phone, expires_on))
        card = BankCard(
            id=new_id("card"),
            customer_id=customer_id,
            bank_code=bank_code,
            card_last4=number[-4:],
            holder_name=holder_name,
            expires_on=expires_on,
            agreement_id=agreement.agreement_id,
            status="bound",
            created_at=self.clock.now(),
        )

        def record(conn: Connection) -> None:
            conn.execute(
                insert(t.bank_cards),
                {
                    "customer_id": customer_id,
                    "id": card.id,
                    "bank_code": bank_code,
                    "card_number": number,
                    "card_last4": card.card_last4,
                    "holder_name": holder_name,
                    "expires_on": expires_on,
                    "agreement_id": agreement.agreement_id,
                    "status": card.status,
                    "created_at": card.created_at,
                },
            )

        try:
            db.run(record)
        except Exception as exc:
            bank.cancel_agreement(agreement.agreement_id)
            if is_unique_violation(exc):
                raise errors.InvalidRequest("this card agreement is already recorded") from exc
            raise
        return card

    def _bound(self, conn: Connection, customer_id: str, number: str) -> bool:
        c = t.bank_cards.c
        found = conn.execute(
            select(c.id).where(
                c.customer_id == customer_id, c.card_number == number, c.status == "bound"
            )
        ).first()
        return found is not None

    def cards(self, conn: Connection, customer_id: str) -> list[BankCard]:
        rows = conn.execute(
            select(t.bank_cards)
            .where(t.bank_cards.c.customer_id == customer_id, t.bank_cards.c.status == "bound")
            .order_by(t.bank_cards.c.id)
        )
        return [_card(r._mapping) for r in rows]

    def card(
        self, conn: Connection, customer_id: str, card_id: str, *, any_status: bool = False
    ) -> BankCard:
        """A bound card; ``any_status`` also finds unbound ones (for payments in flight)."""
        row = conn.execute(
            select(t.bank_cards).where(
                t.bank_cards.c.customer_id == customer_id, t.bank_cards.c.id == card_id
            )
        ).first()
        if row is None or (row.status != "bound" and not any_status):
            raise errors.CardNotFound(f"no bound card {card_id}")
        return _card(row._mapping)

    def usable_card(self, conn: Connection, customer_id: str, card_id: str) -> BankCard:
        """PAY-2: a bound card that has not expired. (The bank itself confirms
        the agreement before money moves.)"""
        card = self.card(conn, customer_id, card_id)
        if card.expired(business_date(self.clock.now())):
            raise errors.CardNotUsable(f"card {card.masked_number} expired on {card.expires_on}")
        return card

    def unbind_card(self, db: Database, customer_id: str, card_id: str) -> BankCard:
        card = db.read(lambda conn: self.card(conn, customer_id, card_id))
        self.banks[card.bank_code].cancel_agreement(card.agreement_id)
        db.run(
            lambda conn: conn.execute(
                update(t.bank_cards)
                .where(t.bank_cards.c.customer_id == customer_id, t.bank_cards.c.id == card_id)
                .values(status="unbound", unbound_at=self.clock.now())
            )
        )
        return card


def _customer(r: RowMapping | dict[str, Any]) -> Customer:
    return Customer(
        id=r["id"],
        kind=CustomerKind(r["kind"]),
        name=r["name"],
        phone=r["phone"],
        status=CustomerStatus(r["status"]),
        account_id=r["account_id"],
        created_at=r["created_at"],
    )


def _card(r: RowMapping) -> BankCard:
    return BankCard(
        id=r["id"],
        customer_id=r["customer_id"],
        bank_code=r["bank_code"],
        card_last4=r["card_last4"],
        holder_name=r["holder_name"],
        expires_on=r["expires_on"],
        agreement_id=r["agreement_id"],
        status=r["status"],
        created_at=r["created_at"],
    )
