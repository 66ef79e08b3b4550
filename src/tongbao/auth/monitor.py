"""Records staff behaviour and raises alerts (SEC-8, SEC-9); rules in :mod:`.behaviour`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from tongbao.audit import AuditLog
from tongbao.auth import tables as t
from tongbao.auth.behaviour import (
    FAILURE_KINDS,
    AlertKind,
    EventKind,
    SeenPlace,
    location_alerts,
    threshold_alert,
    unusual_hour,
    unusual_permission,
)
from tongbao.clock import Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.security.geoip import IpLocation, IpLocator, Network
from tongbao.storage import is_unique_violation


@dataclass(frozen=True, slots=True)
class StaffAlert:
    id: str
    staff_id: str
    kind: AlertKind
    detail: str
    raised_at: datetime


class BehaviourMonitor:
    def __init__(
        self, settings: Settings, clock: Clock, audit: AuditLog, locator: IpLocator
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.audit = audit
        self.locator = locator

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.settings.behaviour_window_minutes)

    def record(
        self, conn: Connection, staff_id: str, kind: EventKind, detail: str, *, weight: int = 1
    ) -> list[StaffAlert]:
        """Count one event and raise the alerts it makes due."""
        now = self.clock.now()
        conn.execute(
            insert(t.staff_events),
            {
                "id": new_id("sev"),
                "staff_id": staff_id,
                "kind": kind.value,
                "weight": weight,
                "detail": detail[:200],
                "at": now,
            },
        )
        since = now - self.window
        e = t.staff_events
        sums = dict(
            conn.execute(
                select(e.c.kind, func.sum(e.c.weight))
                .where(e.c.staff_id == staff_id, e.c.at > since)
                .group_by(e.c.kind)
            ).all()
        )
        failures = sum(int(sums.get(k.value) or 0) for k in FAILURE_KINDS)
        reads = int(sums.get(EventKind.PII_READ.value) or 0)
        raised = []
        for alert in threshold_alert(
            failures,
            reads,
            max_failures=self.settings.behaviour_failed_operations,
            max_reads=self.settings.behaviour_bulk_reads,
        ):
            what = (
                f"{failures} failed logins or refused operations"
                if alert is AlertKind.REPEATED_FAILURES
                else f"{reads} personal-data records read"
            )
            found = self._raise(conn, staff_id, alert, f"{what} within {self.window}")
            if found:
                raised.append(found)
        return raised

    def pii_read(self, conn: Connection, staff_id: str, records: int, what: str) -> None:
        """AUD-4/SEC-8: a staff member read ``records`` records of personal data."""
        if records > 0:
            self.record(conn, staff_id, EventKind.PII_READ, what, weight=records)

    def permission_used(self, conn: Connection, staff_id: str, permission: str) -> list[StaffAlert]:
        """Remember that ``permission`` was used; alert when that is out of pattern."""
        now = self.clock.now()
        u = t.staff_permission_use
        first_activity = conn.execute(
            select(func.min(u.c.first_used_at)).where(u.c.staff_id == staff_id)
        ).scalar()
        last_used = conn.execute(
            select(u.c.last_used_at).where(u.c.staff_id == staff_id, u.c.permission == permission)
        ).scalar()
        raised = []
        if unusual_permission(last_used, first_activity, now):
            alert = self._raise(
                conn,
                staff_id,
                AlertKind.UNUSUAL_PERMISSION,
                f"used {permission}, not used by them in the previous 30 days",
            )
            raised.append(alert)
        if unusual_hour(permission, now):
            alert = self._raise(
                conn, staff_id, AlertKind.UNUSUAL_HOUR, f"used {permission} outside working hours"
            )
            raised.append(alert)
        if last_used is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(u),
                        {
                            "staff_id": staff_id,
                            "permission": permission,
                            "first_used_at": now,
                            "last_used_at": now,
                        },
                    )
            except Exception as exc:  # first use recorded concurrently: fine
                if not is_unique_violation(exc):
                    raise
        else:
            conn.execute(
                update(u)
                .where(u.c.staff_id == staff_id, u.c.permission == permission)
                .values(last_used_at=now)
            )
        return [a for a in raised if a is not None]

    def login_from(
        self,
        conn: Connection,
        staff_id: str,
        source_ip: str | None,
        here: IpLocation,
        *,
        succeeded: bool,
    ) -> list[StaffAlert]:
        """SEC-9: remember where a login attempt came from (``here``, its place by
        :attr:`locator`, looked up before the transaction); alert when the
        place is unusual for the member or too far from their last login."""
        now = self.clock.now()
        baseline = timedelta(days=self.settings.staff_location_baseline_days)
        outcome = "login" if succeeded else "failed login"
        raised = []
        for kind, detail in location_alerts(
            here,
            now,
            self._seen_places(conn, staff_id, now - baseline),
            baseline=baseline,
            travel_window=timedelta(minutes=self.settings.staff_travel_window_minutes),
        ):
            alert = self._raise(conn, staff_id, kind, f"{outcome} ({source_ip}): {detail}")
            if alert is not None:
                raised.append(alert)
        conn.execute(
            insert(t.staff_login_locations),
            {
                "id": new_id("sll"),
                "staff_id": staff_id,
                "ip": source_ip[:45] if source_ip else None,
                "network": here.network.value,
                "country": here.country,
                "province": here.province,
                "city": here.city,
                "outcome": "ok" if succeeded else "refused",
                "at": now,
            },
        )
        return raised

    def _seen_places(self, conn: Connection, staff_id: str, since: datetime) -> list[SeenPlace]:
        """The public places of the member's successful logins since ``since``."""
        p = t.staff_login_locations
        rows = conn.execute(
            select(p.c.country, p.c.province, func.max(p.c.at))
            .where(
                p.c.staff_id == staff_id,
                p.c.outcome == "ok",
                p.c.network == Network.PUBLIC.value,
                p.c.at > since,
            )
            .group_by(p.c.country, p.c.province)
        ).all()
        return [
            SeenPlace(IpLocation(Network.PUBLIC, country, province), last_at)
            for country, province, last_at in rows
        ]

    def _raise(
        self, conn: Connection, staff_id: str, kind: AlertKind, detail: str
    ) -> StaffAlert | None:
        now = self.clock.now()
        a = t.staff_alerts
        recent = conn.execute(
            select(a.c.id).where(
                a.c.staff_id == staff_id, a.c.kind == kind.value, a.c.raised_at > now - self.window
            )
        ).first()
        if recent is not None:
            return None
        alert = StaffAlert(new_id("alert"), staff_id, kind, detail[:300], now)
        conn.execute(
            insert(a),
            {
                "id": alert.id,
                "staff_id": staff_id,
                "kind": kind.value,
                "detail": alert.detail,
                "raised_at": now,
            },
        )
        self.audit.record(
            conn,
            actor="system:behaviour_monitor",
            action="staff.alert",
            target=f"staff:{staff_id}",
            details={"kind": kind.value, "detail": alert.detail},
        )
        return alert

    def alerts(
        self, conn: Connection, *, staff_id: str | None = None, limit: int = 100
    ) -> list[StaffAlert]:
        """Alerts, newest first."""
        a = t.staff_alerts
        query = select(a).order_by(a.c.raised_at.desc(), a.c.id.desc()).limit(limit)
        if staff_id is not None:
            query = query.where(a.c.staff_id == staff_id)
        return [
            StaffAlert(r.id, r.staff_id, AlertKind(r.kind), r.detail, r.raised_at)
            for r in conn.execute(query)
        ]
