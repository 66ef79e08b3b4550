"""Customers, cards, API tokens, staff, payments, outbox, idempotency, calendar, simulated bank.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:08:00.693386
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("principal_type", sa.String(length=10), nullable=False),
        sa.Column("principal_id", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_api_tokens")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(
            "ix_api_tokens_principal", ["principal_type", "principal_id"], unique=False
        )

    op.create_table(
        "business_calendar",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("is_working_day", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=True),
        sa.Column("source", sa.String(length=60), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_business_calendar")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("account_id", name=op.f("uq_customers_account_id")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "local_notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("recipient_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_notifications")),
    )
    with op.batch_alter_table("local_notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_local_notifications_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("recipient_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notification_outbox_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "payment_events",
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=24), nullable=True),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=60), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", "seq", name=op.f("pk_payment_events")),
    )
    op.create_table(
        "payment_orders",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("serial_no", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("scenario", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("payer_account_id", sa.String(length=40), nullable=False),
        sa.Column("payee_account_id", sa.String(length=40), nullable=False),
        sa.Column("payer_name", sa.String(length=100), nullable=False),
        sa.Column("payee_name", sa.String(length=100), nullable=False),
        sa.Column("card_id", sa.String(length=40), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("fee_bearer", sa.String(length=5), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("purpose", sa.String(length=140), nullable=False),
        sa.Column("original_payment_id", sa.String(length=40), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(length=40), nullable=True),
        sa.Column("failure_code", sa.String(length=40), nullable=True),
        sa.Column("failure_message", sa.String(length=200), nullable=True),
        sa.Column("review_reason", sa.String(length=200), nullable=True),
        sa.Column("execute_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expected_arrival_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bank_reference", sa.String(length=40), nullable=True),
        sa.Column("objection_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("objected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("objection_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0 AND fee >= 0", name=op.f("ck_payment_orders_amounts")),
        sa.CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= amount",
            name=op.f("ck_payment_orders_refunds_bounded"),
        ),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_payment_orders")),
        sa.UniqueConstraint("serial_no", name=op.f("uq_payment_orders_serial_no")),
    )
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.create_index("ix_payment_orders_customer", ["customer_id", "id"], unique=False)
        batch_op.create_index(
            "ix_payment_orders_familiar",
            ["payer_account_id", "payee_account_id", "state"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_payment_orders_original_payment_id"),
            ["original_payment_id"],
            unique=False,
        )
        batch_op.create_index("ix_payment_orders_payee", ["payee_account_id", "id"], unique=False)
        batch_op.create_index(
            "ix_payment_orders_state_execute_at", ["state", "execute_at"], unique=False
        )
        batch_op.create_index("uq_payment_orders_id", ["id"], unique=True)

    op.create_table(
        "payment_verifications",
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payment_verifications")),
    )
    op.create_table(
        "simbank_accounts",
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("bank_code", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("holder_name", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_simbank_accounts")),
    )
    op.create_table(
        "simbank_agreements",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("card_number", sa.String(length=40), nullable=False),
        sa.Column("institution", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simbank_agreements")),
    )
    with op.batch_alter_table("simbank_agreements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_simbank_agreements_card_number"), ["card_number"], unique=False
        )

    op.create_table(
        "simbank_instructions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("agreement_id", sa.String(length=64), nullable=False),
        sa.Column("card_number", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("bank_reference", sa.String(length=40), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settle_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simbank_instructions")),
        sa.UniqueConstraint("bank_reference", name=op.f("uq_simbank_instructions_bank_reference")),
    )
    with op.batch_alter_table("simbank_instructions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_simbank_instructions_status_settle_after", ["status", "settle_after"], unique=False
        )

    op.create_table(
        "simbank_statement_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_code", sa.String(length=20), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=False),
        sa.Column("instruction_id", sa.String(length=64), nullable=True),
        sa.Column("bank_reference", sa.String(length=40), nullable=True),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("distortion", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simbank_statement_lines")),
    )
    with op.batch_alter_table("simbank_statement_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_simbank_statement_lines_value_date", ["bank_code", "value_date"], unique=False
        )

    op.create_table(
        "staff_members",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=60), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_members")),
        sa.UniqueConstraint("username", name=op.f("uq_staff_members_username")),
    )
    op.create_table(
        "bank_cards",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_code", sa.String(length=20), nullable=False),
        sa.Column("card_number", sa.String(length=40), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("holder_name", sa.String(length=100), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("agreement_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_bank_cards_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "id", name=op.f("pk_bank_cards")),
        sa.UniqueConstraint("agreement_id", name=op.f("uq_bank_cards_agreement_id")),
    )
    with op.batch_alter_table("bank_cards", schema=None) as batch_op:
        batch_op.create_index("uq_bank_cards_id", ["id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("bank_cards", schema=None) as batch_op:
        batch_op.drop_index("uq_bank_cards_id")

    op.drop_table("bank_cards")
    op.drop_table("staff_members")
    with op.batch_alter_table("simbank_statement_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_simbank_statement_lines_value_date")

    op.drop_table("simbank_statement_lines")
    with op.batch_alter_table("simbank_instructions", schema=None) as batch_op:
        batch_op.drop_index("ix_simbank_instructions_status_settle_after")

    op.drop_table("simbank_instructions")
    with op.batch_alter_table("simbank_agreements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_simbank_agreements_card_number"))

    op.drop_table("simbank_agreements")
    op.drop_table("simbank_accounts")
    op.drop_table("payment_verifications")
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.drop_index("uq_payment_orders_id")
        batch_op.drop_index("ix_payment_orders_state_execute_at")
        batch_op.drop_index("ix_payment_orders_payee")
        batch_op.drop_index(batch_op.f("ix_payment_orders_original_payment_id"))
        batch_op.drop_index("ix_payment_orders_familiar")
        batch_op.drop_index("ix_payment_orders_customer")

    op.drop_table("payment_orders")
    op.drop_table("payment_events")
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_outbox_status_next_attempt_at")

    op.drop_table("notification_outbox")
    with op.batch_alter_table("local_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_local_notifications_recipient_id"))

    op.drop_table("local_notifications")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
    op.drop_table("customers")
    op.drop_table("business_calendar")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_api_tokens_principal")

    op.drop_table("api_tokens")
