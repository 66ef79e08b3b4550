"""Internal-audit samples of transactions and their findings (AUD-5).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_samples",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("drawn_by", sa.String(length=80), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "size >= 1 AND size <= population",
            name=op.f("ck_audit_samples_size_in_population"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_samples")),
    )
    op.create_table(
        "audit_sample_items",
        sa.Column("sample_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("serial_no", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("finding", sa.Text(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.String(length=80), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rectification", sa.Text(), nullable=True),
        sa.Column("rectified_by", sa.String(length=80), nullable=True),
        sa.Column("rectified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sample_id"],
            ["audit_samples.id"],
            name=op.f("fk_audit_sample_items_sample_id_audit_samples"),
        ),
        sa.PrimaryKeyConstraint("sample_id", "payment_id", name=op.f("pk_audit_sample_items")),
    )
    op.create_index(
        "ix_audit_sample_items_state_deadline", "audit_sample_items", ["state", "deadline"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_sample_items_state_deadline", "audit_sample_items")
    op.drop_table("audit_sample_items")
    op.drop_table("audit_samples")
