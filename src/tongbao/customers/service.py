"""Customers, their ledger account, bound bank cards and consents.

Registration with real-name verification (ACC-1 … ACC-6) comes with a later
issue; here a customer is created by staff tooling or the demo seed, gets a
wallet (person) or merchant account (merchant) in the ledger, and can bind
bank cards through the bank channel's quick-pay agreement.

Personal data never reaches the database in clear (SEC-1): name, phone, ID
number, card number and card holder are encrypted under the customer's own
data key (subject ``customer:<id>``), so destroying that key at the end of
the retention period destroys all of it at once (AUD-6). Exact-match lookups
use keyed blind indexes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, bindparam, func, insert, select, update
from stdnum.cn import ric

from tongbao import errors
from tongbao.banking import BankChannel, CardVerification
from tongbao.clock import Clock, business_date
from tongbao.customers import bankcard
from tongbao.customers import tables as t
from tongbao.ids import new_id
from tongbao.ledger import AccountStatus, AccountType, Ledger
from tongbao.security.keyring import EncryptedColumn, KeyRing, subject_for
from tongbao.security.masking import mask_name
from tongbao.security.normalise import normalise_for_index
from tongbao.storage import Database, is_unique_violation
from tongbao.storage.prepared import Prepared

RECORD_CLASS = "customer"
SHREDDED = "[已销毁]"  # shown in place of personal data destroyed at end of retention

# Field names: what each ciphertext is bound to (AEAD associated data) and
# what each blind index is keyed by.
NAME, PHONE, ID_NUMBER = "customers.name", "customers.phone", "customers.id_number"
CARD_NUMBER, HOLDER_NAME = "bank_cards.card_number", "bank_cards.holder_name"

# Every column holding ciphertext, for ``tongbao keys reencrypt``.
ENCRYPTED_COLUMNS = (
    EncryptedColumn("customers", "name", "id", RECORD_CLASS, NAME),
    EncryptedColumn("customers", "phone", "id", RECORD_CLASS, PHONE),
    EncryptedColumn("customers", "id_number", "id", RECORD_CLASS, ID_NUMBER),
    EncryptedColumn("bank_cards", "card_number", "customer_id", RECORD_CLASS, CARD_NUMBER),
    EncryptedColumn("bank_cards", "holder_name", "customer_id", RECORD_CLASS, HOLDER_NAME),
)


def validate_phone(phone: str) -> str:
    try:
        digits = normalise_for_index(PHONE, phone)  # digits only, +86 dropped
    except errors.ValidationFailed:  # no digits at all: the message below says more
        digits = ""
    if len(digits) != 11 or not digits.startswith("1"):
        raise errors.ValidationFailed("a mobile number has 11 digits and starts with 1")
    return digits


def validate_id_number(id_number: str) -> str:
    """A resident ID number (GB 11643-1999), check digit included."""
    try:
        return str(ric.validate(id_number.strip().upper()))
    except Exception:  # stdnum's ValidationError subclasses, or a malformed date
        raise errors.ValidationFailed("the resident ID number is not valid") from None


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
    id_number: str | None = None
    consented_policy_version: str | None = None
    closed_at: datetime | None = None
    shredded: bool = False

    @property
    def display_name(self) -> str:
        """How payments and notifications name this customer to others: a
        merchant by its business name, a person masked (SEC-3)."""
        return self.name if self.kind is CustomerKind.MERCHANT else mask_name(self.name)


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
    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        banks: Mapping[str, BankChannel],
        keyring: KeyRing,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.banks = banks
        self.keyring = keyring
        keyring.register(*ENCRYPTED_COLUMNS)

    # --- customers -------------------------------------------------------------

    def register(
        self,
        conn: Connection,
        *,
        kind: CustomerKind,
        name: str,
        phone: str | None = None,
        id_number: str | None = None,
        policy_version: str | None = None,
        channel: str = "api",
    ) -> Customer:
        """A new customer with a ledger account; ``policy_version`` records
        their consent to that privacy policy version (DATA-1)."""
        name = name.strip()
        if not name:
            raise errors.ValidationFailed("a customer needs a name")
        phone = validate_phone(phone) if phone else None
        id_number = validate_id_number(id_number) if id_number else None
        customer_id = new_id("cus")
        account_type = (
            AccountType.MERCHANT if kind is CustomerKind.MERCHANT else AccountType.CUSTOMER_WALLET
        )
        # The account's name carries no personal data: the ledger is never shredded.
        account = self.ledger.open_account(
            conn, account_type, name=f"{kind.value} {customer_id}", owner_id=customer_id
        )
        now = self.clock.now()

        def seal(field: str, value: str | None) -> str | None:
            return self._seal(conn, customer_id, field, value)

        conn.execute(
            insert(t.customers),
            {
                "id": customer_id,
                "kind": kind.value,
                "name": seal(NAME, name),
                "phone": seal(PHONE, phone),
                "phone_bidx": self._index(PHONE, phone),
                "id_number": seal(ID_NUMBER, id_number),
                "id_number_bidx": self._index(ID_NUMBER, id_number),
                "status": CustomerStatus.ACTIVE.value,
                "account_id": account.id,
                "created_at": now,
            },
        )
        customer = Customer(
            customer_id, kind, name, phone, CustomerStatus.ACTIVE, account.id, now, id_number
        )
        if policy_version is not None:
            customer = self.record_consent(conn, customer, policy_version, channel=channel)
        return customer

    def _seal(
        self, conn: Connection, customer_id: str, field: str, value: str | None
    ) -> str | None:
        if value is None:
            return None
        return self.keyring.encrypt(
            conn,
            subject=subject_for(RECORD_CLASS, customer_id),
            record_class=RECORD_CLASS,
            field=field,
            plaintext=value,
        )

    def _index(self, field: str, value: str | None) -> str | None:
        return None if value is None else self.keyring.blind_index(field, value)

    def _open(self, conn: Connection, field: str, value: str | None) -> str | None:
        return None if value is None else self.keyring.decrypt(conn, value, field=field)

    def get(self, conn: Connection, customer_id: str) -> Customer:
        row = _BY_ID.first(conn, {"p_id": customer_id})
        if row is None:
            raise errors.NotFound(f"no customer {customer_id}")
        return self._customer(conn, row)

    def by_account(self, conn: Connection, account_id: str) -> Customer | None:
        row = _BY_ACCOUNT.first(conn, {"p_account": account_id})
        return None if row is None else self._customer(conn, row)

    def search(
        self,
        conn: Connection,
        *,
        phone: str | None = None,
        id_number: str | None = None,
        limit: int = 100,
    ) -> list[Customer]:
        """Customers, optionally the ones with exactly this phone or ID number —
        found through the blind index, never by decrypting the table."""
        query = select(t.customers).order_by(t.customers.c.id).limit(limit)
        if phone is not None:
            digits = validate_phone(phone)
            query = query.where(t.customers.c.phone_bidx == self.keyring.blind_index(PHONE, digits))
        if id_number is not None:
            number = validate_id_number(id_number)
            query = query.where(
                t.customers.c.id_number_bidx == self.keyring.blind_index(ID_NUMBER, number)
            )
        return [self._customer(conn, r._mapping) for r in conn.execute(query)]

    def _customer(self, conn: Connection, r: RowMapping | dict[str, Any]) -> Customer:
        shredded = r["shredded_at"] is not None
        if shredded:
            name, phone, id_number = SHREDDED, None, None
        else:
            name = self._open(conn, NAME, r["name"]) or ""
            phone = self._open(conn, PHONE, r["phone"])
            id_number = self._open(conn, ID_NUMBER, r["id_number"])
        return Customer(
            id=r["id"],
            kind=CustomerKind(r["kind"]),
            name=name,
            phone=phone,
            status=CustomerStatus(r["status"]),
            account_id=r["account_id"],
            created_at=r["created_at"],
            id_number=id_number,
            consented_policy_version=r["consented_policy_version"],
            closed_at=r["closed_at"],
            shredded=shredded,
        )

    # --- consent (DATA-1) --------------------------------------------------------------

    def record_consent(
        self, conn: Connection, customer: Customer, version: str, *, channel: str = "api"
    ) -> Customer:
        """The customer agrees to privacy policy ``version``; history is kept."""
        if not version.strip() or len(version) > 20:
            raise errors.ValidationFailed("a policy version is 1 to 20 characters")
        now = self.clock.now()
        conn.execute(
            insert(t.consents),
            {
                "customer_id": customer.id,
                "id": new_id("cns"),
                "document": "privacy_policy",
                "version": version,
                "accepted_at": now,
                "channel": channel[:20],
            },
        )
        conn.execute(
            update(t.customers)
            .where(t.customers.c.id == customer.id)
            .values(consented_policy_version=version)
        )
        return dataclasses.replace(customer, consented_policy_version=version)

    def consents(self, conn: Connection, customer_id: str) -> list[Consent]:
        rows = conn.execute(
            select(t.consents)
            .where(t.consents.c.customer_id == customer_id)
            .order_by(t.consents.c.accepted_at.desc(), t.consents.c.id.desc())
        )
        return [
            Consent(r.id, r.document, r.version, r.accepted_at, r.channel, r.withdrawn_at)
            for r in rows
        ]

    def withdraw_consent(self, conn: Connection, customer: Customer) -> Customer:
        """The customer withdraws consent: payments stop until they agree again."""
        conn.execute(
            update(t.consents)
            .where(t.consents.c.customer_id == customer.id, t.consents.c.withdrawn_at.is_(None))
            .values(withdrawn_at=self.clock.now())
        )
        conn.execute(
            update(t.customers)
            .where(t.customers.c.id == customer.id)
            .values(consented_policy_version=None)
        )
        return dataclasses.replace(customer, consented_policy_version=None)

    # --- closing and retention (AUD-6) ---------------------------------------------------

    def close(self, conn: Connection, customer_id: str) -> Customer:
        """End the relationship: the account must be empty; cards are unbound by
        the caller first. The retention clock for personal data starts now."""
        customer = self.get(conn, customer_id)
        if customer.status is CustomerStatus.CLOSED:
            raise errors.AccountClosed(f"customer {customer_id} is already closed")
        self.ledger.set_status(conn, customer.account_id, AccountStatus.CLOSED)
        now = self.clock.now()
        conn.execute(
            update(t.customers)
            .where(t.customers.c.id == customer_id)
            .values(status=CustomerStatus.CLOSED.value, closed_at=now)
        )
        return self.get(conn, customer_id)

    def due_for_shredding(
        self, conn: Connection, closed_before: datetime, *, limit: int | None = None
    ) -> list[str]:
        """Closed customers whose retention period ended and whose data still exists."""
        due = _due(closed_before).order_by(t.customers.c.closed_at).limit(limit)
        return [row.id for row in conn.execute(due)]

    def count_due_for_shredding(self, conn: Connection, closed_before: datetime) -> int:
        due = _due(closed_before).subquery()
        return int(conn.execute(select(func.count()).select_from(due)).scalar_one())

    def shred(self, conn: Connection, customer_id: str) -> int:
        """Crypto-shred the customer's personal data: their data key is destroyed,
        so every ciphertext made with it — here, in backups, in replicas — is
        unreadable. The blind indexes go too (they would still match a value)."""
        destroyed = self.keyring.shred(conn, subject_for(RECORD_CLASS, customer_id))
        conn.execute(
            update(t.customers)
            .where(t.customers.c.id == customer_id)
            .values(shredded_at=self.clock.now(), phone_bidx=None, id_number_bidx=None)
        )
        conn.execute(
            update(t.bank_cards)
            .where(t.bank_cards.c.customer_id == customer_id)
            .values(card_number_bidx="")
        )
        return destroyed

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
                    "card_number": self._seal(conn, customer_id, CARD_NUMBER, number),
                    "card_number_bidx": self._index(CARD_NUMBER, number),
                    "card_last4": card.card_last4,
                    "holder_name": self._seal(conn, customer_id, HOLDER_NAME, holder_name),
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
                c.customer_id == customer_id,
                c.card_number_bidx == self.keyring.blind_index(CARD_NUMBER, number),
                c.status == "bound",
            )
        ).first()
        return found is not None

    def cards(self, conn: Connection, customer_id: str) -> list[BankCard]:
        rows = conn.execute(
            select(t.bank_cards)
            .where(t.bank_cards.c.customer_id == customer_id, t.bank_cards.c.status == "bound")
            .order_by(t.bank_cards.c.id)
        )
        return [self._card(conn, r._mapping) for r in rows]

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
        return self._card(conn, row._mapping)

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

    def _card(self, conn: Connection, r: RowMapping | dict[str, Any]) -> BankCard:
        try:
            holder = self._open(conn, HOLDER_NAME, r["holder_name"]) or ""
        except errors.DataShredded:
            holder = SHREDDED
        return BankCard(
            id=r["id"],
            customer_id=r["customer_id"],
            bank_code=r["bank_code"],
            card_last4=r["card_last4"],
            holder_name=holder,
            expires_on=r["expires_on"],
            agreement_id=r["agreement_id"],
            status=r["status"],
            created_at=r["created_at"],
        )


@dataclass(frozen=True, slots=True)
class Consent:
    id: str
    document: str
    version: str
    accepted_at: datetime
    channel: str
    withdrawn_at: datetime | None


def _due(closed_before: datetime) -> Select[tuple[str]]:
    c = t.customers.c
    return select(c.id).where(c.closed_at < closed_before, c.shredded_at.is_(None))
