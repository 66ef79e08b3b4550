"""API credentials. Only :mod:`tongbao.auth` reads or writes these."""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

api_tokens = Table(
    "api_tokens",
    metadata,
    # SHA-256 of the token: a stolen table does not yield usable tokens.
    Column("token_hash", String(64), primary_key=True),
    Column("principal_type", String(10), nullable=False),
    Column("principal_id", ID, nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Index("ix_api_tokens_principal", "principal_type", "principal_id"),
)

staff_members = Table(
    "staff_members",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", String(60), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("roles", Text, nullable=False),  # comma-separated role names
    Column("status", String(10), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
