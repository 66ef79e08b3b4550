"""Customers, their bound bank cards and consents. Only :mod:`tongbao.customers` uses these.

Personal data (name, phone, ID number, card number, card holder) is stored
only as ciphertext made by :mod:`tongbao.security.keyring` (SEC-1); exact-match
lookups go through the keyed blind-index columns ``*_bidx`` (HMAC), never by
decrypting the table.
"""

from __future__ import annotations

from sqlalchemy import Column, Date, ForeignKey, Index, String, Table, Text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

customers = Table(
    "customers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(10), nullable=False),  # person | merchant
    Column("name", Text, nullable=False),  # ciphertext
    Column("phone", Text),  # ciphertext
    Column("status", String(10), nullable=False),
    Column("account_id", ID, nullable=False, unique=True),  # wallet or merchant account
    Column("created_at", UtcDateTime, nullable=False),
    Column("phone_bidx", String(64)),
    Column("id_number", Text),  # ciphertext; resident ID number (GB 11643)
    Column("id_number_bidx", String(64)),
    # DATA-1: the privacy policy version the customer last agreed to (the
    # consents table has the history); on the row so payments check it for free.
    Column("consented_policy_version", String(20)),
    Column("closed_at", UtcDateTime),
    Column("shredded_at", UtcDateTime),  # AUD-6: personal data destroyed
    Index("ix_customers_phone_bidx", "phone_bidx"),
    Index("ix_customers_id_number_bidx", "id_number_bidx"),
)

bank_cards = Table(
    "bank_cards",
    metadata,
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("bank_code", String(20), nullable=False),
    Column("card_number", Text, nullable=False),  # ciphertext
    Column("card_number_bidx", String(64), nullable=False),
    Column("card_last4", String(4), nullable=False),
    Column("holder_name", Text, nullable=False),  # ciphertext
    Column("expires_on", Date, nullable=False),
    Column("agreement_id", String(64), nullable=False, unique=True),
    Column("status", String(10), nullable=False),  # bound | unbound
    Column("created_at", UtcDateTime, nullable=False),
    Column("unbound_at", UtcDateTime),
    Index("uq_bank_cards_id", "id", unique=True),
    Index("ix_bank_cards_card_number_bidx", "card_number_bidx"),
)

# DATA-1: what each customer agreed to and when; append-only history.
consents = Table(
    "consents",
    metadata,
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("document", String(40), nullable=False),  # e.g. privacy_policy
    Column("version", String(20), nullable=False),
    Column("accepted_at", UtcDateTime, nullable=False),
    Column("channel", String(20), nullable=False),  # api | app | counter | demo
    Column("withdrawn_at", UtcDateTime),
)
