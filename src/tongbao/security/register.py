"""The vulnerability register and the penetration-test record (SEC-10).

Every vulnerability found — by the dependency check, by a penetration test,
or entered by staff — is registered with a fix deadline of
``vuln_fix_hours`` (24) after it was found, then fixed, or accepted as a risk
with a reason by somebody other than who reported it. Registering a
dependency check is idempotent: a finding (advisory + package + version) is
registered once, and an open one the check no longer finds in a package it
checked (the package was upgraded) is marked fixed. The report lists the
overdue ones and flags a last penetration test older than
``pentest_interval_days``.

Every change is recorded in the audit log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from tongbao import errors
from tongbao.audit import AuditLog
from tongbao.clock import SHANGHAI, Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.security import tables as t
from tongbao.security.vulnerabilities import (
    CheckResult,
    Finding,
    Pentest,
    Severity,
    Vulnerability,
    VulnReport,
    VulnSource,
    VulnStatus,
    check_acceptance,
    check_close,
    check_text,
    fix_deadline,
    report,
)

_v = t.vulnerabilities
_p = t.pentests


@dataclass(frozen=True, slots=True)
class NewFinding:
    """A vulnerability as a tester or staff member reports it."""

    title: str
    severity: Severity
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CheckRegistered:
    """What registering one dependency check changed."""

    registered: tuple[Vulnerability, ...]
    """Findings seen for the first time (or again after they were fixed)."""
    known: int
    """Findings already in the register."""
    fixed: tuple[Vulnerability, ...]
    """Open findings the check no longer finds, now marked fixed."""


def _vuln(row: Any) -> Vulnerability:
    return Vulnerability(
        id=row.id,
        source=VulnSource(row.source),
        title=row.title,
        severity=Severity(row.severity),
        package=row.package,
        version=row.version,
        advisory_id=row.advisory_id,
        fixed_in=row.fixed_in,
        detail=row.detail,
        pentest_id=row.pentest_id,
        reported_by=row.reported_by,
        found_at=row.found_at,
        deadline=row.deadline,
        status=VulnStatus(row.status),
        closed_by=row.closed_by,
        closed_at=row.closed_at,
        resolution=row.resolution,
    )


class VulnerabilityRegister:
    """SEC-10: vulnerabilities fixed within 24 hours; quarterly penetration tests."""

    def __init__(self, clock: Clock, settings: Settings, audit: AuditLog) -> None:
        self.clock = clock
        self.settings = settings
        self.audit = audit

    # --- registering ------------------------------------------------------------------

    def register_check(self, conn: Connection, actor: str, result: CheckResult) -> CheckRegistered:
        """Register the findings of a dependency check that really consulted a
        database; mark fixed the open ones it no longer finds in a package it
        checked (upgraded). A finding in a package the check did not look at
        (a removed dependency, or another lock file) stays open for staff to close."""
        current = {f.fingerprint: f for f in result.findings}
        rows = conn.execute(
            select(_v).where(_v.c.source == VulnSource.DEPS_CHECK.value).with_for_update()
        ).all()
        existing = {row.fingerprint: _vuln(row) for row in rows}
        registered: list[Vulnerability] = []
        for fingerprint, finding in sorted(current.items()):
            known = existing.get(fingerprint)
            if known is None:
                registered.append(self._insert_finding(conn, actor, finding, fingerprint))
            elif known.status is VulnStatus.FIXED:  # back again, e.g. after a downgrade
                registered.append(self._reopen(conn, actor, known, result.source))
        gone = [
            v
            for fingerprint, v in sorted(existing.items())
            if fingerprint not in current
            and v.status is VulnStatus.OPEN
            and v.package in result.names
        ]
        note = f"no longer found by the dependency check against {result.source}"
        fixed = [self._close(conn, actor, v, VulnStatus.FIXED, note, automatic=True) for v in gone]
        self.audit.record(
            conn,
            actor=actor,
            action="security.deps_check",
            target="vulnerability_register",
            outcome="found" if result.findings else "clean",
            details={
                "source": result.source,
                "advisories": result.advisories,
                "packages": result.packages,
                "findings": len(result.findings),
                "registered": [v.id for v in registered],
                "fixed": [v.id for v in fixed],
            },
        )
        return CheckRegistered(
            registered=tuple(registered),
            known=len(current) - len(registered),
            fixed=tuple(fixed),
        )

    def add(self, conn: Connection, actor: str, finding: NewFinding) -> Vulnerability:
        """A vulnerability entered by staff."""
        return self._insert(conn, actor, VulnSource.STAFF, finding)

    def record_pentest(
        self,
        conn: Connection,
        actor: str,
        *,
        tested_on: date,
        scope: str,
        tester: str,
        summary: str | None,
        findings: Sequence[NewFinding],
    ) -> tuple[Pentest, tuple[Vulnerability, ...]]:
        """A penetration test and its findings, each registered with its deadline."""
        if tested_on > self.clock.now().astimezone(SHANGHAI).date():
            raise errors.ValidationFailed(f"the test date {tested_on} is in the future")
        pentest_id = new_id("pen")
        values = {
            "id": pentest_id,
            "tested_on": tested_on,
            "scope": check_text("the scope", scope),
            "tester": check_text("the tester", tester, limit=200),
            "summary": check_text("the summary", summary) if summary else None,
            "recorded_by": actor,
            "recorded_at": self.clock.now(),
        }
        conn.execute(insert(_p).values(**values))
        registered = tuple(
            self._insert(conn, actor, VulnSource.PENTEST, f, pentest_id=pentest_id)
            for f in findings
        )
        self.audit.record(
            conn,
            actor=actor,
            action="security.pentest.record",
            target=f"pentest:{pentest_id}",
            after={"scope": values["scope"], "tester": values["tester"]},
            details={"tested_on": tested_on.isoformat(), "findings": [v.id for v in registered]},
        )
        return self.pentest(conn, pentest_id), registered

    # --- closing ----------------------------------------------------------------------

    def fix(self, conn: Connection, actor: str, vuln_id: str, note: str) -> Vulnerability:
        """Mark a vulnerability fixed, saying how."""
        return self._close(
            conn, actor, self._lock(conn, vuln_id), VulnStatus.FIXED, check_text("the note", note)
        )

    def accept(self, conn: Connection, actor: str, vuln_id: str, reason: str) -> Vulnerability:
        """Accept the risk of a vulnerability instead of fixing it: with a reason,
        by somebody other than who reported it."""
        vuln = self._lock(conn, vuln_id)
        check_close(vuln.status, VulnStatus.ACCEPTED)
        check_acceptance(vuln.reported_by, actor)
        return self._close(conn, actor, vuln, VulnStatus.ACCEPTED, check_text("the reason", reason))

    # --- reading ----------------------------------------------------------------------

    def get(self, conn: Connection, vuln_id: str) -> Vulnerability:
        row = conn.execute(select(_v).where(_v.c.id == vuln_id)).first()
        if row is None:
            raise errors.VulnerabilityNotFound(f"no vulnerability {vuln_id}")
        return _vuln(row)

    def search(self, conn: Connection, status: VulnStatus | None = None) -> list[Vulnerability]:
        """Oldest first; open ones by deadline."""
        query = select(_v).order_by(_v.c.deadline, _v.c.id)
        if status is not None:
            query = query.where(_v.c.status == status.value)
        return [_vuln(row) for row in conn.execute(query)]

    def pentest(self, conn: Connection, pentest_id: str) -> Pentest:
        row = conn.execute(select(_p).where(_p.c.id == pentest_id)).one()
        return self._pentest(conn, row)

    def pentests(self, conn: Connection) -> list[Pentest]:
        """Newest first."""
        rows = conn.execute(select(_p).order_by(_p.c.tested_on.desc(), _p.c.id.desc()))
        return [self._pentest(conn, row) for row in rows]

    def report(self, conn: Connection) -> VulnReport:
        """Open and overdue vulnerabilities, accepted risks, fixes (late ones
        counted), and whether the quarterly penetration test is due."""
        active = [VulnStatus.OPEN.value, VulnStatus.ACCEPTED.value]
        vulns = [_vuln(r) for r in conn.execute(select(_v).where(_v.c.status.in_(active)))]
        fixed = _v.c.status == VulnStatus.FIXED.value
        count = select(func.count()).select_from(_v)
        fixed_total = conn.execute(count.where(fixed)).scalar_one()
        fixed_late = conn.execute(count.where(fixed, _v.c.closed_at > _v.c.deadline)).scalar_one()
        latest = conn.execute(select(_p).order_by(_p.c.tested_on.desc(), _p.c.id.desc())).first()
        return report(
            vulns,
            fixed=fixed_total,
            fixed_late=fixed_late,
            last_pentest=self._pentest(conn, latest) if latest else None,
            interval_days=self.settings.pentest_interval_days,
            now=self.clock.now(),
            today=self.clock.now().astimezone(SHANGHAI).date(),
        )

    # --- internals --------------------------------------------------------------------

    def _insert_finding(
        self, conn: Connection, actor: str, finding: Finding, fingerprint: str
    ) -> Vulnerability:
        title = f"{finding.advisory_id} in {finding.package} {finding.version}"
        return self._insert(
            conn,
            actor,
            VulnSource.DEPS_CHECK,
            NewFinding(title, finding.severity, finding.summary or None),
            package=finding.package,
            version=finding.version,
            advisory_id=finding.advisory_id,
            fixed_in=finding.fixed_in,
            fingerprint=fingerprint,
        )

    def _insert(
        self,
        conn: Connection,
        actor: str,
        source: VulnSource,
        finding: NewFinding,
        **extra: Any,
    ) -> Vulnerability:
        now = self.clock.now()
        vuln_id = new_id("vul")
        conn.execute(
            insert(_v).values(
                id=vuln_id,
                source=source.value,
                title=check_text("the title", finding.title),
                severity=finding.severity.value,
                detail=check_text("the detail", finding.detail) if finding.detail else None,
                reported_by=actor,
                found_at=now,
                deadline=fix_deadline(now, self.settings.vuln_fix_hours),
                status=VulnStatus.OPEN.value,
                **extra,
            )
        )
        vuln = self.get(conn, vuln_id)
        self.audit.record(
            conn,
            actor=actor,
            action="security.vuln.register",
            target=f"vulnerability:{vuln_id}",
            after={"title": vuln.title, "detail": vuln.detail},
            details={
                "source": source.value,
                "severity": vuln.severity.value,
                "advisory": vuln.advisory_id,
                "package": vuln.package,
                "version": vuln.version,
                "deadline": vuln.deadline.isoformat(),
            },
        )
        return vuln

    def _reopen(self, conn: Connection, actor: str, vuln: Vulnerability, db: str) -> Vulnerability:
        now = self.clock.now()
        values: dict[str, Any] = {
            "status": VulnStatus.OPEN.value,
            "found_at": now,
            "deadline": fix_deadline(now, self.settings.vuln_fix_hours),
            "closed_by": None,
            "closed_at": None,
            "resolution": None,
        }
        self._update(conn, vuln, values)
        self.audit.record(
            conn,
            actor=actor,
            action="security.vuln.reopen",
            target=f"vulnerability:{vuln.id}",
            details={"source": db, "deadline": values["deadline"].isoformat()},
        )
        return self.get(conn, vuln.id)

    def _close(
        self,
        conn: Connection,
        actor: str,
        vuln: Vulnerability,
        target: VulnStatus,
        text: str,
        *,
        automatic: bool = False,
    ) -> Vulnerability:
        check_close(vuln.status, target)
        now = self.clock.now()
        self._update(
            conn,
            vuln,
            {"status": target.value, "closed_by": actor, "closed_at": now, "resolution": text},
        )
        action = "security.vuln.fix" if target is VulnStatus.FIXED else "security.vuln.accept"
        self.audit.record(
            conn,
            actor=actor,
            action=action,
            target=f"vulnerability:{vuln.id}",
            after={"status": target.value, "resolution": text},
            details={"late": now > vuln.deadline, "automatic": automatic},
        )
        return self.get(conn, vuln.id)

    def _lock(self, conn: Connection, vuln_id: str) -> Vulnerability:
        row = conn.execute(select(_v).where(_v.c.id == vuln_id).with_for_update()).first()
        if row is None:
            raise errors.VulnerabilityNotFound(f"no vulnerability {vuln_id}")
        return _vuln(row)

    @staticmethod
    def _update(conn: Connection, vuln: Vulnerability, values: dict[str, Any]) -> None:
        done = conn.execute(
            update(_v).where(_v.c.id == vuln.id, _v.c.status == vuln.status.value).values(**values)
        ).rowcount
        if done != 1:  # the row lock makes this unreachable; never overwrite a decision
            raise errors.InvalidTransition(f"vulnerability {vuln.id} changed meanwhile")

    @staticmethod
    def _pentest(conn: Connection, row: Any) -> Pentest:
        findings = conn.execute(
            select(func.count()).select_from(_v).where(_v.c.pentest_id == row.id)
        ).scalar_one()
        return Pentest(
            id=row.id,
            tested_on=row.tested_on,
            scope=row.scope,
            tester=row.tester,
            summary=row.summary,
            recorded_by=row.recorded_by,
            recorded_at=row.recorded_at,
            findings=findings,
        )
