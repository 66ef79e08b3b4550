"""Signed bank instructions at the simulated bank (SEC-12, PAY-6): the platform
keys it verifies with, and each instruction's signed fields and signature.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("memo", sa.String(length=140)),
    ("bank_code", sa.String(length=20)),
    ("signed_at", sa.DateTime(timezone=True)),
    ("signature_algorithm", sa.String(length=10)),
    ("key_id", sa.String(length=16)),
    ("signature", sa.String(length=100)),
)


def upgrade() -> None:
    op.create_table(
        "simbank_platform_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("institution", sa.String(length=40), nullable=False),
        sa.Column("algorithm", sa.String(length=10), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_simbank_platform_keys")),
    )
    with op.batch_alter_table("simbank_instructions") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("simbank_instructions") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
    op.drop_table("simbank_platform_keys")
