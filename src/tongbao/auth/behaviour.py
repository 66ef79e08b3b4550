"""Staff behaviour rules (SEC-8, SEC-9 for staff logins). Pure.

Events a staff member causes are counted in a sliding window
(``behaviour_window_minutes``); an alert is raised when

* ``repeated_failures``: login failures plus refused operations reach
  ``behaviour_failed_operations``;
* ``bulk_personal_data``: personal-data records read reach ``behaviour_bulk_reads``;
* ``unusual_permission``: a member with a settled pattern (first permission
  use at least :data:`PATTERN_DAYS` ago) uses a permission they have not used
  in the last :data:`PATTERN_DAYS` days;
* ``unusual_hour``: a sensitive permission is used outside
  :data:`WORKING_HOURS` (Shanghai time).

One alert of a kind per member per window: a burst raises one alert, not fifty.

    >>> from datetime import UTC
    >>> at = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    >>> unusual_hour("funds.adjust.approve", at), unusual_hour("reports.view", at)
    (True, False)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from tongbao.clock import SHANGHAI


class EventKind(StrEnum):
    LOGIN_FAILED = "login_failed"
    REFUSED = "refused"
    PII_READ = "pii_read"


class AlertKind(StrEnum):
    REPEATED_FAILURES = "repeated_failures"
    BULK_PERSONAL_DATA = "bulk_personal_data"
    UNUSUAL_PERMISSION = "unusual_permission"
    UNUSUAL_HOUR = "unusual_hour"


PATTERN_DAYS = 30
WORKING_HOURS = range(7, 22)  # 07:00 to 21:59 in Shanghai
SENSITIVE_PERMISSIONS = frozenset(
    {
        "funds.adjust.request",
        "funds.adjust.approve",
        "limits.change.approve",
        "risk_policy.change.approve",
        "config.change.approve",
        "roles.grant.request",
        "roles.grant.approve",
        "customers.read_pii",
        "keys.manage",
        "staff.offboard",
        "audit.export",
    }
)

FAILURE_KINDS = (EventKind.LOGIN_FAILED, EventKind.REFUSED)


def threshold_alert(
    failures: int, reads: int, *, max_failures: int, max_reads: int
) -> list[AlertKind]:
    """The count-based alerts due for one member's events in the window.

    >>> threshold_alert(5, 0, max_failures=5, max_reads=50)
    [<AlertKind.REPEATED_FAILURES: 'repeated_failures'>]
    """
    due = []
    if failures >= max_failures:
        due.append(AlertKind.REPEATED_FAILURES)
    if reads >= max_reads:
        due.append(AlertKind.BULK_PERSONAL_DATA)
    return due


def unusual_permission(
    last_used: datetime | None, first_activity: datetime | None, now: datetime
) -> bool:
    """A permission not used for :data:`PATTERN_DAYS` by a member whose pattern is settled.

    >>> from datetime import UTC
    >>> now = datetime(2026, 11, 23, tzinfo=UTC)
    >>> unusual_permission(None, now - timedelta(days=40), now)
    True
    >>> unusual_permission(None, now - timedelta(days=3), now)  # a newcomer: no pattern yet
    False
    """
    pattern = timedelta(days=PATTERN_DAYS)
    if first_activity is None or now - first_activity < pattern:
        return False
    return last_used is None or now - last_used >= pattern


def unusual_hour(permission: str, at: datetime) -> bool:
    """A sensitive permission used outside working hours."""
    return permission in SENSITIVE_PERMISSIONS and at.astimezone(SHANGHAI).hour not in WORKING_HOURS
