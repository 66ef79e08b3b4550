"""Payment orders, their state history and verification codes.

Only :mod:`tongbao.payments` reads or writes these. ``account_id`` (the
customer-side account that owns the order) leads the primary key so orders
shard with the account.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
)

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

payment_orders = Table(
    "payment_orders",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("id", ID, primary_key=True),
    Column("serial_no", String(32), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("state", String(24), nullable=False),
    Column("scenario", String(20), nullable=False),
    Column("mode", String(10), nullable=False),
    Column("customer_id", ID, nullable=False),
    Column("payer_account_id", ID, nullable=False),
    Column("payee_account_id", ID, nullable=False),
    # Names as they were when the order was made: receipts and notifications
    # show them without looking anyone up, and later renames do not rewrite history.
    Column("payer_name", String(100), nullable=False),
    Column("payee_name", String(100), nullable=False),
    Column("card_id", ID),
    Column("amount", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("fee_bearer", String(5), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("purpose", String(140), nullable=False),
    Column("original_payment_id", ID, index=True),
    Column("refunded_amount", BigInteger, nullable=False),
    Column("hold_id", ID),
    Column("failure_code", String(40)),
    Column("failure_message", String(200)),
    Column("review_reason", String(200)),
    Column("execute_at", UtcDateTime),
    Column("expected_arrival_by", UtcDateTime),
    Column("bank_reference", String(40)),
    Column("objection_deadline", UtcDateTime),
    Column("acknowledged_at", UtcDateTime),
    Column("objected_at", UtcDateTime),
    Column("objection_reason", String(500)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime),
    CheckConstraint("amount > 0 AND fee >= 0", name="amounts"),
    CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refunds_bounded"),
    Index("uq_payment_orders_id", "id", unique=True),
    Index("ix_payment_orders_customer", "customer_id", "id"),
    Index("ix_payment_orders_payee", "payee_account_id", "id"),
    Index("ix_payment_orders_familiar", "payer_account_id", "payee_account_id", "state"),
    Index("ix_payment_orders_state_execute_at", "state", "execute_at"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("payment_id", ID, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("from_state", String(24)),
    Column("to_state", String(24), nullable=False),
    Column("actor", String(60), nullable=False),
    Column("note", String(200)),
    Column("at", UtcDateTime, nullable=False),
)

payment_verifications = Table(
    "payment_verifications",
    metadata,
    Column("payment_id", ID, primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
)
