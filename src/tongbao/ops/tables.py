"""Versioned policy settings. Only :mod:`tongbao.ops` reads or writes these."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, Text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

# Append-only (a database trigger refuses UPDATE and DELETE): a change is a
# new version, so every value ever in force stays on record with who asked
# for it and who approved it (SEC-6).
policy_settings = Table(
    "policy_settings",
    metadata,
    Column("key", String(80), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("changed_by", String(60), nullable=False),
    Column("approved_by", String(60), nullable=False),
    Column("request_id", String(40)),
    Column("created_at", UtcDateTime, nullable=False),
)
