"""Internal-audit sampling of transactions (AUD-5): draw, review, rectify, report.

The population is every payment that reached a final state and was created in
the period, as the payments capability reports it (its service, never its
tables). The seed is random, drawn before the sample exists, and stored with
it: :func:`tongbao.audit.sampling.draw` with that seed repeats the draw.

Every change is recorded in the audit log in the same transaction. Findings
and notes may name people, so the log holds only their digest (``after``).

Segregation of duties (SEC-5) is enforced here, so the API and the command
line obey it alike: who drew a sample does not review its items
(:func:`~tongbao.audit.sampling.check_reviewer`), and nobody on the audit side
of a sample records the rectification of its findings
(:func:`~tongbao.audit.sampling.check_rectifier`). People are compared by
their audit-log name (``staff:<id>``, ``cli:<os user>``).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tongbao import errors
from tongbao.audit import tables as t
from tongbao.audit.sampling import (
    FindingState,
    Sample,
    SampleItem,
    SampleReport,
    check_finding_transition,
    check_period,
    check_rectifier,
    check_reviewer,
    check_text,
    draw,
    rectification_deadline,
    report,
)
from tongbao.audit.service import AuditLog
from tongbao.clock import Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.payments import Payments

SEED_BYTES = 16

_s = t.samples
_i = t.sample_items


def _item(row: Any) -> SampleItem:
    return SampleItem(
        payment_id=row.payment_id,
        serial_no=row.serial_no,
        state=FindingState(row.state),
        finding=row.finding,
        deadline=row.deadline,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        rectification=row.rectification,
        rectified_by=row.rectified_by,
        rectified_at=row.rectified_at,
    )


def _sample(row: Any, items: tuple[SampleItem, ...]) -> Sample:
    return Sample(
        id=row.id,
        period_start=row.period_start,
        period_end=row.period_end,
        population=row.population,
        size=row.size,
        seed=row.seed,
        drawn_by=row.drawn_by,
        drawn_at=row.drawn_at,
        items=items,
    )


class AuditSampling:
    """Random samples of transactions for internal audit (AUD-5)."""

    def __init__(
        self, clock: Clock, settings: Settings, audit: AuditLog, payments: Payments
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.audit = audit
        self.payments = payments

    def draw_sample(
        self,
        conn: Connection,
        actor: str,
        since: datetime,
        until: datetime,
        size: int,
        *,
        source_ip: str | None = None,
        via: str | None = None,
    ) -> Sample:
        """Draw ``size`` of the completed payments created in ``[since, until)``."""
        check_period(since, until)
        population = dict(self.payments.completed_between(conn, since, until))
        seed = secrets.token_bytes(SEED_BYTES)
        chosen = draw(list(population), size, seed)  # refuses a bad size before any write
        sample_id = new_id("smp")
        now = self.clock.now()
        conn.execute(
            insert(_s).values(
                id=sample_id,
                period_start=since,
                period_end=until,
                population=len(population),
                size=size,
                seed=seed.hex(),
                drawn_by=actor,
                drawn_at=now,
            )
        )
        conn.execute(
            insert(_i),
            [
                {
                    "sample_id": sample_id,
                    "payment_id": payment_id,
                    "serial_no": population[payment_id],
                    "state": FindingState.PENDING.value,
                }
                for payment_id in chosen
            ],
        )
        self._record(
            conn,
            actor,
            "audit.sample.draw",
            f"audit_sample:{sample_id}",
            source_ip,
            via,
            details={
                "since": since.isoformat(),
                "until": until.isoformat(),
                "population": len(population),
                "size": size,
                "seed": seed.hex(),
            },
        )
        return self.get(conn, sample_id)

    def record_result(
        self,
        conn: Connection,
        actor: str,
        sample_id: str,
        payment_id: str,
        ok: bool,
        finding: str | None,
        *,
        source_ip: str | None = None,
        via: str | None = None,
    ) -> SampleItem:
        """The review of one sampled payment: ``ok``, or a problem with its
        finding, to be rectified within ``audit_rectification_days``. Not by
        whoever drew the sample (:class:`errors.AuditSampleSelfReview`)."""
        item = self._lock(conn, sample_id, payment_id)
        check_reviewer(self._drawn_by(conn, sample_id), actor)
        target = FindingState.OK if ok else FindingState.PROBLEM
        check_finding_transition(item.state, target)
        text = check_text("the finding", finding) if not ok or finding else None
        now = self.clock.now()
        deadline = (
            None if ok else rectification_deadline(now, self.settings.audit_rectification_days)
        )
        self._update(
            conn,
            sample_id,
            payment_id,
            item.state,
            state=target.value,
            finding=text,
            deadline=deadline,
            reviewed_by=actor,
            reviewed_at=now,
        )
        self._record(
            conn,
            actor,
            "audit.sample.result",
            f"audit_sample:{sample_id}/{payment_id}",
            source_ip,
            via,
            outcome=target.value,
            after={"state": target.value, "finding": text},
            details={"deadline": deadline.isoformat() if deadline else None},
        )
        return self._lock(conn, sample_id, payment_id)

    def rectify(
        self,
        conn: Connection,
        actor: str,
        sample_id: str,
        payment_id: str,
        note: str,
        *,
        source_ip: str | None = None,
        via: str | None = None,
    ) -> SampleItem:
        """Close a problem with a note on what was done about it. Recorded by
        the business side, not by whoever raised the finding or drew the
        sample (:class:`errors.AuditSampleSelfRectification`)."""
        item = self._lock(conn, sample_id, payment_id)
        check_finding_transition(item.state, FindingState.RECTIFIED)
        check_rectifier(self._drawn_by(conn, sample_id), item, actor)
        text = check_text("the rectification note", note)
        now = self.clock.now()
        late = item.deadline is not None and now > item.deadline
        self._update(
            conn,
            sample_id,
            payment_id,
            item.state,
            state=FindingState.RECTIFIED.value,
            rectification=text,
            rectified_by=actor,
            rectified_at=now,
        )
        self._record(
            conn,
            actor,
            "audit.sample.rectify",
            f"audit_sample:{sample_id}/{payment_id}",
            source_ip,
            via,
            after={"state": FindingState.RECTIFIED.value, "rectification": text},
            details={"late": late},
        )
        return self._lock(conn, sample_id, payment_id)

    def get(self, conn: Connection, sample_id: str) -> Sample:
        row = conn.execute(select(_s).where(_s.c.id == sample_id)).first()
        if row is None:
            raise errors.AuditSampleNotFound(f"no audit sample {sample_id}")
        items = conn.execute(select(_i).where(_i.c.sample_id == sample_id).order_by(_i.c.serial_no))
        return _sample(row, tuple(_item(r) for r in items))

    def samples(self, conn: Connection, limit: int = 50) -> list[Sample]:
        """The latest samples, newest first, without their items."""
        rows = conn.execute(select(_s).order_by(_s.c.drawn_at.desc(), _s.c.id.desc()).limit(limit))
        return [_sample(row, ()) for row in rows]

    def report(self, conn: Connection, sample_id: str) -> SampleReport:
        """Counts per state and the problems with their deadlines, overdue ones flagged."""
        return report(self.get(conn, sample_id), self.clock.now())

    def _drawn_by(self, conn: Connection, sample_id: str) -> str:
        drawn_by: str = conn.execute(select(_s.c.drawn_by).where(_s.c.id == sample_id)).scalar_one()
        return drawn_by

    def _record(
        self,
        conn: Connection,
        actor: str,
        action: str,
        target: str,
        source_ip: str | None,
        via: str | None,
        *,
        details: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """One audit record; ``via`` names who ran the command line for ``actor``."""
        extra = {"via": via} if via else {}
        self.audit.record(
            conn,
            actor=actor,
            action=action,
            target=target,
            source_ip=source_ip,
            details={**(details or {}), **extra},
            **fields,
        )

    def _lock(self, conn: Connection, sample_id: str, payment_id: str) -> SampleItem:
        row = conn.execute(
            select(_i)
            .where(_i.c.sample_id == sample_id, _i.c.payment_id == payment_id)
            .with_for_update()
        ).first()
        if row is None:
            raise errors.AuditSampleNotFound(
                f"payment {payment_id} is not in audit sample {sample_id}"
            )
        return _item(row)

    def _update(
        self,
        conn: Connection,
        sample_id: str,
        payment_id: str,
        expected: FindingState,
        **values: Any,
    ) -> None:
        done = conn.execute(
            update(_i)
            .where(
                _i.c.sample_id == sample_id,
                _i.c.payment_id == payment_id,
                _i.c.state == expected.value,
            )
            .values(**values)
        ).rowcount
        if done != 1:  # the row lock makes this unreachable; never overwrite a decision
            raise errors.InvalidTransition(f"payment {payment_id} changed state meanwhile")
