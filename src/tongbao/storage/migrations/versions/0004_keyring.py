"""Key ring: key versions and subject data keys (SEC-1, SEC-12, AUD-6).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_ring",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("digest_algorithm", sa.String(length=10), nullable=False),
        sa.Column("wrapped_root_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_key_ring_one_ring")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_ring")),
    )
    op.create_table(
        "key_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cipher", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_key_versions")),
    )
    op.create_table(
        "data_keys",
        sa.Column("dek_id", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("record_class", sa.String(length=30), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("cipher", sa.String(length=20), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("dek_id", name=op.f("pk_data_keys")),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index("ix_data_keys_subject", ["subject", "dek_id"], unique=False)
        batch_op.create_index("ix_data_keys_kek_version", ["kek_version", "subject"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_data_keys_kek_version")
        batch_op.drop_index("ix_data_keys_subject")
    op.drop_table("data_keys")
    op.drop_table("key_versions")
    op.drop_table("key_ring")
