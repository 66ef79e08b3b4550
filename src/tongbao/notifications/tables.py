"""Transactional outbox and the local channel's message store."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", ID, primary_key=True),
    Column("recipient_id", ID, nullable=False),
    Column("channel", String(10), nullable=False),  # sms | push
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("status", String(10), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", String(200)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Index("ix_notification_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

local_messages = Table(
    "local_notifications",
    metadata,
    Column("id", ID, primary_key=True),  # = outbox id, so redelivery is harmless
    Column("recipient_id", ID, nullable=False, index=True),
    Column("channel", String(10), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("text", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=False),
)
