"""Customers and their bound bank cards. Only :mod:`tongbao.customers` uses these."""

from __future__ import annotations

from sqlalchemy import Column, Date, ForeignKey, Index, String, Table

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

customers = Table(
    "customers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(10), nullable=False),  # person | merchant
    Column("name", String(100), nullable=False),
    Column("phone", String(20)),
    Column("status", String(10), nullable=False),
    Column("account_id", ID, nullable=False, unique=True),  # wallet or merchant account
    Column("created_at", UtcDateTime, nullable=False),
)

bank_cards = Table(
    "bank_cards",
    metadata,
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("bank_code", String(20), nullable=False),
    Column("card_number", String(40), nullable=False),
    Column("card_last4", String(4), nullable=False),
    Column("holder_name", String(100), nullable=False),
    Column("expires_on", Date, nullable=False),
    Column("agreement_id", String(64), nullable=False, unique=True),
    Column("status", String(10), nullable=False),  # bound | unbound
    Column("created_at", UtcDateTime, nullable=False),
    Column("unbound_at", UtcDateTime),
    Index("uq_bank_cards_id", "id", unique=True),
)
