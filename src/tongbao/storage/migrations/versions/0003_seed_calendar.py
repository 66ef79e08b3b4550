"""Seed the business calendar from the chinese-calendar package (REC-4).

The package knows the State Council's holiday arrangements for the years it
ships; later years are loaded with ``tongbao calendar import``. The platform
refuses dates of years the table does not hold rather than guess.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import date, timedelta

import chinese_calendar
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_calendar = sa.table(
    "business_calendar",
    sa.column("day", sa.Date),
    sa.column("is_working_day", sa.Boolean),
    sa.column("name", sa.String),
    sa.column("source", sa.String),
)


def upgrade() -> None:
    first, last = min(chinese_calendar.holidays), max(chinese_calendar.holidays)
    version = getattr(chinese_calendar, "__version__", "unknown")
    rows = []
    day = date(first.year, 1, 1)
    while day <= date(last.year, 12, 31):
        working = chinese_calendar.is_workday(day)
        _, name = chinese_calendar.get_holiday_detail(day)
        if working and day.weekday() >= 5:
            name = f"adjusted working day ({name})" if name else "adjusted working day"
        rows.append(
            {
                "day": day,
                "is_working_day": working,
                "name": name,
                "source": f"chinese-calendar {version}",
            }
        )
        day += timedelta(days=1)
    op.bulk_insert(_calendar, rows)


def downgrade() -> None:
    op.execute("DELETE FROM business_calendar")
