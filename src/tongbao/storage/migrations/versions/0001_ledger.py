"""Ledger: accounts, balance rows, journal entries, postings, holds.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:00:34.043084
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tongbao.storage.ddl import drop_append_only, make_append_only

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("buckets", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_ledger_accounts_code")),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_accounts_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("reverses_entry_id", sa.String(length=40), nullable=True),
        sa.Column("hold_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    # Partial indexes: most entries are no reversal, and batch postings may
    # carry no reference; rows without the value cost no index work.
    op.create_index(
        "uq_ledger_entries_reverses_entry_id",
        "ledger_entries",
        ["reverses_entry_id"],
        unique=True,
        postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_entry_id IS NOT NULL"),
    )
    op.create_index(
        "ix_ledger_entries_reference",
        "ledger_entries",
        ["reference"],
        postgresql_where=sa.text("reference IS NOT NULL"),
        sqlite_where=sa.text("reference IS NOT NULL"),
    )

    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("normal_side", sa.String(length=1), nullable=False),
        sa.Column("no_overdraft", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "NOT no_overdraft OR (normal_side = 'C' AND debits_posted + debits_pending <= credits_posted) OR (normal_side = 'D' AND credits_posted + credits_pending <= debits_posted)",
            name=op.f("ck_ledger_balances_no_overdraft"),
        ),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
            name=op.f("ck_ledger_balances_counters_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_balances_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", "bucket", name=op.f("pk_ledger_balances")),
    )
    op.create_table(
        "ledger_holds",
        sa.Column("debit_account_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("credit_account_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("debit_bucket", sa.SmallInteger(), nullable=False),
        sa.Column("credit_bucket", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_amount", sa.BigInteger(), nullable=True),
        sa.Column("posted_entry_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'posted', 'voided', 'expired')",
            name=op.f("ck_ledger_holds_state_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_holds_amount_positive")),
        sa.CheckConstraint(
            "posted_amount IS NULL OR (posted_amount > 0 AND posted_amount <= amount)",
            name=op.f("ck_ledger_holds_posted_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_credit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_debit_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("debit_account_id", "id", name=op.f("pk_ledger_holds")),
    )
    with op.batch_alter_table("ledger_holds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_holds_state_expires_at", ["state", "expires_at"], unique=False
        )
        batch_op.create_index("uq_ledger_holds_id", ["id"], unique=True)

    op.create_table(
        "ledger_postings",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_postings_amount_non_zero")),
        sa.PrimaryKeyConstraint("account_id", "entry_id", name=op.f("pk_ledger_postings")),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_postings_entry_id", ["entry_id"], unique=False)

    make_append_only("ledger_entries")
    make_append_only("ledger_postings")


def downgrade() -> None:
    drop_append_only("ledger_postings")
    drop_append_only("ledger_entries")
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_postings_entry_id")

    op.drop_table("ledger_postings")
    with op.batch_alter_table("ledger_holds", schema=None) as batch_op:
        batch_op.drop_index("uq_ledger_holds_id")
        batch_op.drop_index("ix_ledger_holds_state_expires_at")

    op.drop_table("ledger_holds")
    op.drop_table("ledger_balances")
    op.drop_index("ix_ledger_entries_reference", "ledger_entries")
    op.drop_index("uq_ledger_entries_reverses_entry_id", "ledger_entries")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_accounts_owner_id"))

    op.drop_table("ledger_accounts")
