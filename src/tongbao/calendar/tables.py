"""The business calendar (REC-4): one row per day of every known year."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, String, Table

from tongbao.storage.metadata import metadata

business_days = Table(
    "business_calendar",
    metadata,
    Column("day", Date, primary_key=True),
    Column("is_working_day", Boolean, nullable=False),
    Column("name", String(60)),
    Column("source", String(60), nullable=False),
)
