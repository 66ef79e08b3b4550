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
  :data:`WORKING_HOURS` (Shanghai time);
* ``unusual_location`` (SEC-9): a login attempt (successful or not) from a
  place (country, and province where known) none of the member's successful
  logins of the last ``staff_location_baseline_days`` came from;
* ``impossible_travel`` (SEC-9): a login attempt from another place than a
  successful login less than ``staff_travel_window_minutes`` earlier.

The location rules judge public addresses only: a login from the internal
network (private, loopback addresses) or from an address whose place is
unknown never alerts. A member's first login has no baseline, so it raises
nothing; it becomes the baseline. Failed attempts are judged but never join
the baseline (whoever guesses passwords from abroad must not teach the
monitor that abroad is usual).

One alert of a kind per member per window: a burst raises one alert, not fifty.

    >>> from datetime import UTC
    >>> at = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    >>> unusual_hour("funds.adjust.approve", at), unusual_hour("reports.view", at)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tongbao.clock import SHANGHAI
from tongbao.security.geoip import IpLocation, Network


class EventKind(StrEnum):
    LOGIN_FAILED = "login_failed"
    REFUSED = "refused"
    PII_READ = "pii_read"


class AlertKind(StrEnum):
    REPEATED_FAILURES = "repeated_failures"
    BULK_PERSONAL_DATA = "bulk_personal_data"
    UNUSUAL_PERMISSION = "unusual_permission"
    UNUSUAL_HOUR = "unusual_hour"
    UNUSUAL_LOCATION = "unusual_location"
    IMPOSSIBLE_TRAVEL = "impossible_travel"


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


@dataclass(frozen=True, slots=True)
class SeenPlace:
    """A place a member logged in from successfully, and when they last did."""

    location: IpLocation
    last_at: datetime


def same_place(a: IpLocation, b: IpLocation) -> bool:
    """Same country, and the same province where both are known.

    >>> from tongbao.security.geoip import Network as N
    >>> beijing = IpLocation(N.PUBLIC, "中国", "北京")
    >>> guangdong = IpLocation(N.PUBLIC, "中国", "广东省")
    >>> same_place(beijing, guangdong), same_place(beijing, IpLocation(N.PUBLIC, "中国"))
    (False, True)
    """
    if a.country != b.country:
        return False
    return a.province is None or b.province is None or a.province == b.province


def location_alerts(
    here: IpLocation,
    at: datetime,
    seen: Sequence[SeenPlace],
    *,
    baseline: timedelta,
    travel_window: timedelta,
) -> list[tuple[AlertKind, str]]:
    """SEC-9: the location alerts due for a login attempt from ``here`` at ``at``.

    ``seen`` are the places of the member's earlier successful logins.

    >>> from datetime import UTC
    >>> from tongbao.security.geoip import Network as N
    >>> at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    >>> beijing = SeenPlace(IpLocation(N.PUBLIC, "中国", "北京"), at - timedelta(hours=1))
    >>> guangdong = IpLocation(N.PUBLIC, "中国", "广东省", "深圳市")
    >>> rules = {"baseline": timedelta(days=90), "travel_window": timedelta(hours=4)}
    >>> [kind.value for kind, _ in location_alerts(guangdong, at, [beijing], **rules)]
    ['unusual_location', 'impossible_travel']
    >>> location_alerts(guangdong, at, [], **rules)  # the first login: no baseline
    []
    """
    if here.network is not Network.PUBLIC:
        return []
    usual = [s for s in seen if s.location.network is Network.PUBLIC and at - s.last_at <= baseline]
    due: list[tuple[AlertKind, str]] = []
    if usual and not any(same_place(here, s.location) for s in usual):
        places = "、".join(sorted({s.location.place for s in usual}))
        due.append(
            (
                AlertKind.UNUSUAL_LOCATION,
                f"login from {here.place}; their logins in the last {baseline.days} days "
                f"came from {places}",
            )
        )
    elsewhere = [
        s for s in usual if at - s.last_at < travel_window and not same_place(here, s.location)
    ]
    if elsewhere:
        latest = max(elsewhere, key=lambda s: s.last_at)
        minutes = int((at - latest.last_at).total_seconds() // 60)
        due.append(
            (
                AlertKind.IMPOSSIBLE_TRAVEL,
                f"login from {here.place} {minutes} minutes after a login from "
                f"{latest.location.place}",
            )
        )
    return due
