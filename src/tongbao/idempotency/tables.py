"""Idempotency records: one per (principal, key), written with the effect."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, Text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal_id", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(10), nullable=False),
    Column("path", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
)
