"""Encrypted customer fields with blind indexes, consent records, retention
markers (SEC-1, SEC-3, DATA-1, AUD-6).

Name, phone and card columns now hold ciphertext. A migration has no key, so
it cannot encrypt rows already stored in clear; no release ever stored them,
so it refuses (with the fix) rather than leave clear personal data behind.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    stored = op.get_bind().execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    if stored:
        raise RuntimeError(
            f"0007: {stored} customers are stored in clear by a pre-release database; "
            "it cannot be encrypted without the key — delete it (e.g. rm var/tongbao.db) "
            "and run the start command again"
        )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.alter_column("name", type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("phone", type_=sa.Text(), existing_nullable=True)
        batch_op.add_column(sa.Column("phone_bidx", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("id_number", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("id_number_bidx", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("consented_policy_version", sa.String(length=20), nullable=True)
        )
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_customers_phone_bidx", ["phone_bidx"], unique=False)
        batch_op.create_index("ix_customers_id_number_bidx", ["id_number_bidx"], unique=False)
    with op.batch_alter_table("bank_cards", schema=None) as batch_op:
        batch_op.alter_column("card_number", type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("holder_name", type_=sa.Text(), existing_nullable=False)
        batch_op.add_column(sa.Column("card_number_bidx", sa.String(length=64), nullable=False))
        batch_op.create_index(
            "ix_bank_cards_card_number_bidx", ["card_number_bidx"], unique=False
        )
    op.create_table(
        "consents",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("document", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_consents_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "id", name=op.f("pk_consents")),
    )


def downgrade() -> None:
    op.drop_table("consents")
    with op.batch_alter_table("bank_cards", schema=None) as batch_op:
        batch_op.drop_index("ix_bank_cards_card_number_bidx")
        batch_op.drop_column("card_number_bidx")
        batch_op.alter_column("holder_name", type_=sa.String(length=100), existing_nullable=False)
        batch_op.alter_column("card_number", type_=sa.String(length=40), existing_nullable=False)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_id_number_bidx")
        batch_op.drop_index("ix_customers_phone_bidx")
        for column in (
            "shredded_at",
            "closed_at",
            "consented_policy_version",
            "id_number_bidx",
            "id_number",
            "phone_bidx",
        ):
            batch_op.drop_column(column)
        batch_op.alter_column("phone", type_=sa.String(length=20), existing_nullable=True)
        batch_op.alter_column("name", type_=sa.String(length=100), existing_nullable=False)
