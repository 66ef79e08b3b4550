"""Ledger tables. Only :mod:`tongbao.ledger` reads or writes them.

Keys are application-generated; every table that grows with traffic
(balances, postings, holds) leads its primary key with the account id, so the
schema can be sharded by account on a distributed PostgreSQL-compatible engine.
``ledger_entries`` and ``ledger_postings`` are append-only: migrations add
triggers on both SQLite and PostgreSQL that refuse UPDATE and DELETE.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Table,
    text,
)

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(64), unique=True),
    Column("type", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("owner_id", ID, index=True),
    Column("name", String(200), nullable=False),
    Column("status", String(10), nullable=False),
    Column("buckets", SmallInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

balances = Table(
    "ledger_balances",
    metadata,
    Column("account_id", ID, ForeignKey("ledger_accounts.id"), primary_key=True),
    Column("bucket", SmallInteger, primary_key=True),
    # Copies of immutable account attributes and of the status, so one
    # conditional UPDATE can check everything under the row lock.
    Column("currency", String(3), nullable=False),
    Column("normal_side", String(1), nullable=False),
    Column("no_overdraft", Boolean, nullable=False),
    Column("status", String(10), nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
        " AND credits_pending >= 0",
        name="counters_non_negative",
    ),
    CheckConstraint(
        "NOT no_overdraft OR (normal_side = 'C' AND debits_posted + debits_pending"
        " <= credits_posted) OR (normal_side = 'D' AND credits_posted + credits_pending"
        " <= debits_posted)",
        name="no_overdraft",
    ),
)

entries = Table(
    "ledger_entries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reference", String(64)),
    Column("description", String(200), nullable=False),
    # No self-reference key: reverse() locks and reads the original first, and
    # `ledger verify` checks every reversal against it (L8).
    Column("reverses_entry_id", ID),
    Column("hold_id", ID),
    Column("created_at", UtcDateTime, nullable=False),
    # Partial: most entries are no reversal, and batch postings may carry no
    # reference; rows without the value cost no index work.
    Index(
        "uq_ledger_entries_reverses_entry_id",
        "reverses_entry_id",
        unique=True,
        postgresql_where=text("reverses_entry_id IS NOT NULL"),
        sqlite_where=text("reverses_entry_id IS NOT NULL"),
    ),
    Index(
        "ix_ledger_entries_reference",
        "reference",
        postgresql_where=text("reference IS NOT NULL"),
        sqlite_where=text("reference IS NOT NULL"),
    ),
)

# No foreign keys on purpose: PostgreSQL checks them with a trigger per row,
# which halves bulk posting throughput, and they would cross shards once the
# table is sharded by account. Every writer resolves both ids first, and
# `ledger verify` checks referential integrity (invariants L1 and L3).
postings = Table(
    "ledger_postings",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("entry_id", ID, primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount <> 0", name="amount_non_zero"),
    Index("ix_ledger_postings_entry_id", "entry_id"),
)

holds = Table(
    "ledger_holds",
    metadata,
    Column("debit_account_id", ID, ForeignKey("ledger_accounts.id"), primary_key=True),
    Column("id", ID, primary_key=True),
    Column("credit_account_id", ID, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("debit_bucket", SmallInteger, nullable=False),
    Column("credit_bucket", SmallInteger, nullable=False),
    Column("state", String(10), nullable=False),
    Column("reference", String(64)),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    Column("posted_amount", BigInteger),
    Column("posted_entry_id", ID),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("state IN ('pending', 'posted', 'voided', 'expired')", name="state_known"),
    CheckConstraint(
        "posted_amount IS NULL OR (posted_amount > 0 AND posted_amount <= amount)",
        name="posted_within_amount",
    ),
    Index("uq_ledger_holds_id", "id", unique=True),
    Index("ix_ledger_holds_state_expires_at", "state", "expires_at"),
)
