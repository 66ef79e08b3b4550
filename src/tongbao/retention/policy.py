"""Retention periods. Pure.

Each record class has a period in years (``settings.retention_years``); a
record whose retention clock started before :func:`cutoff` is due for
destruction. When the clock starts is the record class's own rule: customer
identity data when the relationship ends (the customer is closed), a
notification when it was sent.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class RecordClass(StrEnum):
    TRANSACTION = "transaction"
    CUSTOMER = "customer"
    DISPUTE = "dispute"
    AUDIT = "audit"
    NOTIFICATION = "notification"


def cutoff(now: datetime, years: int) -> datetime:
    """The instant ``years`` calendar years before ``now``; 29 February falls
    back to the 28th, so a record is never destroyed early.

    >>> from datetime import UTC
    >>> cutoff(datetime(2026, 11, 23, tzinfo=UTC), 5).isoformat()
    '2021-11-23T00:00:00+00:00'
    >>> cutoff(datetime(2028, 2, 29, 12, tzinfo=UTC), 1).isoformat()
    '2027-02-28T12:00:00+00:00'
    """
    if years < 0:
        raise ValueError("a retention period cannot be negative")
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February in a year without one
        return now.replace(year=now.year - years, day=28)
