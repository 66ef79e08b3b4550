"""The purge job: destroy every record past its retention period (AUD-6).

Each capability that keeps a record class registers a :data:`Purger` — a
function that destroys (in one transaction) up to ``limit`` records whose
retention clock started before the cutoff and returns how many it destroyed.
Personal data is destroyed by crypto-shredding (the subject's data key goes),
so copies in backups become unreadable too. The job runs batch by batch
until nothing is due, so it can be stopped and re-run at any time; a second
run destroys nothing more. Every batch is audited in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy import Connection

from tongbao import errors
from tongbao.audit import AuditLog
from tongbao.clock import Clock
from tongbao.retention.policy import RecordClass, cutoff
from tongbao.storage import Database

Purger = Callable[[Connection, datetime, int], int]
"""``(conn, cutoff, limit) -> destroyed``: destroy up to ``limit`` due records."""

ACTOR = "system:retention"


@dataclass(frozen=True, slots=True)
class ClassReport:
    record_class: str
    years: int
    cutoff: datetime
    destroyed: int
    how: str


@dataclass(frozen=True, slots=True)
class PurgeReport:
    classes: list[ClassReport] = field(default_factory=list)
    dry_run: bool = False

    @property
    def destroyed(self) -> int:
        return sum(c.destroyed for c in self.classes)


@dataclass(frozen=True, slots=True)
class _Registered:
    purge: Purger
    count: Callable[[Connection, datetime], int]
    how: str


class Retention:
    def __init__(
        self, db: Database, clock: Clock, audit: AuditLog, years: Mapping[str, int]
    ) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.years = dict(years)
        self._purgers: dict[RecordClass, _Registered] = {}

    def register(
        self,
        record_class: RecordClass,
        purge: Purger,
        count: Callable[[Connection, datetime], int],
        *,
        how: str,
    ) -> None:
        """``count`` tells how many records are due (for a dry run and progress);
        ``how`` says in words how they are destroyed, for the report."""
        self._purgers[record_class] = _Registered(purge, count, how)

    def unmanaged(self) -> list[str]:
        """Record classes with a retention period but nothing that purges them
        (kept for good until a capability registers a purger)."""
        return sorted(set(self.years) - {c.value for c in self._purgers})

    def purge(
        self,
        *,
        dry_run: bool = False,
        batch_size: int = 200,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PurgeReport:
        if batch_size < 1:
            raise errors.ValidationFailed("batch_size must be at least 1")
        now = self.clock.now()
        reports = [
            self._purge_class(now, record_class, registered, dry_run, batch_size, progress)
            for record_class, registered in sorted(self._purgers.items())
        ]
        return PurgeReport(reports, dry_run)

    def _purge_class(
        self,
        now: datetime,
        record_class: RecordClass,
        registered: _Registered,
        dry_run: bool,
        batch_size: int,
        progress: Callable[[str, int, int], None] | None,
    ) -> ClassReport:
        years = self.years[record_class.value]
        before = cutoff(now, years)
        due = self.db.read(lambda conn: registered.count(conn, before))
        destroyed = 0
        while not dry_run:
            done = self.db.run(
                partial(
                    self._batch,
                    record_class=record_class,
                    registered=registered,
                    before=before,
                    limit=batch_size,
                    years=years,
                )
            )
            destroyed += done
            if progress:
                progress(record_class.value, destroyed, max(due, destroyed))
            if done < batch_size:
                break
        return ClassReport(
            record_class.value, years, before, due if dry_run else destroyed, registered.how
        )

    def _batch(
        self,
        conn: Connection,
        *,
        record_class: RecordClass,
        registered: _Registered,
        before: datetime,
        limit: int,
        years: int,
    ) -> int:
        done = registered.purge(conn, before, limit)
        if done:
            self.audit.record(
                conn,
                actor=ACTOR,
                action="retention.purge",
                target=f"record_class:{record_class.value}",
                details={"destroyed": done, "cutoff": before.isoformat(), "years": years},
            )
        return done
