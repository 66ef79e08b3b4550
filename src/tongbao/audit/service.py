"""The audit log's public service: record, search, export, checkpoint, verify.

:meth:`AuditLog.record` takes the caller's open ``Connection``: the record is
written in the same transaction as the action it records, so a rolled-back
action leaves no record and a committed one always has its record. It locks
the one chain-head row to append, so concurrent transactions queue there
until the one holding it commits: call :meth:`~AuditLog.record` as the *last*
statement of a transaction, to hold that lock for as short a time as possible.

Checkpoints (:mod:`tongbao.audit.checkpoints`) are signed from committed
data only, after the covered stretch of the chain has been verified, so a
checkpoint never vouches for an uncommitted or already tampered head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select

from tongbao import errors
from tongbao.audit import tables as t
from tongbao.audit.checkpoint_file import CheckpointFile, LoadedCheckpoints
from tongbao.audit.checkpoints import Checkpoint
from tongbao.audit.export import csv_header, csv_rows
from tongbao.audit.model import (
    GENESIS,
    GENESIS_HASH,
    AuditQuery,
    AuditRecord,
    AuditVerifyReport,
    ChainChecker,
    ChainHead,
    CheckpointProblem,
    SignedPoint,
    check_query,
    make_entry,
    report,
    seal,
)
from tongbao.clock import Clock
from tongbao.pagination import Page, check_limit, page_of
from tongbao.security.algorithms import require_digest
from tongbao.storage import Database

log = structlog.get_logger(__name__)

_r = t.records
_h = t.chain_head
Progress = Callable[[int, int], None]
"""Called as ``progress(checked, total)`` while a chain is verified."""
VERIFY_BATCH = 5_000
EVERYTHING = AuditQuery()


def _lock_head_statement(dialect: str) -> Any:
    """Insert the head row if it is missing, else lock it — one statement
    either way — and return the chain's newest seq and hash. The no-op update
    takes the row lock; PostgreSQL at READ COMMITTED returns the newest
    committed version after waiting for it."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # updated_at is set properly by the append that follows, in the same transaction.
    statement = build(_h).values(id=1, seq=0, hash=GENESIS_HASH, updated_at=func.now())
    return statement.on_conflict_do_update(
        index_elements=[_h.c.id], set_={"id": _h.c.id}
    ).returning(_h.c.seq, _h.c.hash)


_LOCK_HEAD = {name: _lock_head_statement(name) for name in ("postgresql", "sqlite")}


# The columns in the order of AuditRecord's fields: rows become records by
# position, the cheapest way (verification turns every record of the chain).
_RECORD_COLUMNS = [_r.c[name] for name in AuditRecord.__slots__]


def _record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(*row)


@contextmanager
def consistent_read(db: Database) -> Iterator[Connection]:
    """One read-only snapshot: the chain head and the records must agree with
    each other even while others append (PostgreSQL reads at REPEATABLE READ)."""
    if db.dialect != "postgresql":
        with db.snapshot() as conn:
            yield conn
        return
    with db.engine.connect() as raw:
        conn = raw.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            yield conn


class AuditLog:
    """Tamper-evident audit log (AUD-1 … AUD-4) on one hash chain."""

    def __init__(
        self,
        clock: Clock,
        *,
        algorithm: str = "SHA-256",
        checkpoints: CheckpointFile | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        require_digest(algorithm)
        self.clock = clock
        self.algorithm = algorithm
        self.checkpoints = checkpoints
        self.redact = redact

    # --- writing ------------------------------------------------------------------

    def record(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: str = "ok",
        source_ip: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append a record in the caller's transaction.

        ``actor`` is ``Principal.actor`` (``staff:…``, ``customer:…``) or
        ``system:<component>``; ``action`` a dotted lower-case verb
        (``customer.update``); ``target`` the ids acted on. ``before`` and
        ``after`` are stored only as digests of their canonical JSON, so they
        may hold personal data; ``details`` is stored as given and must not
        (phone, ID and card numbers in it are masked as a second line of
        defence). Malformed input is refused before anything is written.
        """
        entry = make_entry(
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            source_ip=source_ip,
            before=before,
            after=after,
            details=details,
            redact=self.redact,
        )
        seq, prev_hash = conn.execute(_LOCK_HEAD[conn.dialect.name]).one()
        record = seal(
            entry,
            seq=seq + 1,
            at=self.clock.now(),
            prev_hash=prev_hash,
            algorithm=self.algorithm,
        )
        conn.execute(insert(_r), {name: getattr(record, name) for name in AuditRecord.__slots__})
        conn.execute(
            update(_h)
            .where(_h.c.id == 1)
            .values(seq=record.seq, hash=record.hash, updated_at=record.at)
        )
        return record

    def record_read(
        self,
        conn: Connection,
        *,
        actor: str,
        target: str,
        fields: Sequence[str],
        count: int,
        source_ip: str | None = None,
        purpose: str | None = None,
    ) -> AuditRecord:
        """AUD-4: who read which sensitive data — ``fields`` of ``count``
        records of ``target`` (``customer:cus_…``, or a search such as
        ``customers?phone``) — and when. Names the fields, never their values."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise errors.ValidationFailed("count must be a non-negative integer")
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise errors.ValidationFailed("fields must be a list of field names")
        details: dict[str, Any] = {"fields": sorted(set(fields)), "count": count}
        if purpose:
            details["purpose"] = purpose
        return self.record(
            conn,
            actor=actor,
            action="data.read",
            target=target,
            source_ip=source_ip,
            details=details,
        )

    # --- reading --------------------------------------------------------------------

    def get(self, conn: Connection, seq: int) -> AuditRecord:
        row = conn.execute(select(*_RECORD_COLUMNS).where(_r.c.seq == seq)).first()
        if row is None:
            raise errors.AuditRecordNotFound(f"no audit record {seq}")
        return _record(row)

    def head(self, conn: Connection) -> ChainHead | None:
        """The stored chain head (``None`` before the first record)."""
        return read_head(conn)

    def search(
        self,
        conn: Connection,
        query: AuditQuery = EVERYTHING,
        *,
        cursor: str | None = None,
        limit: int = 20,
    ) -> Page[AuditRecord]:
        """AUD-2: matching records, newest first; ``cursor`` is the
        ``next_cursor`` of the previous page. The caller records the search
        itself (``action="audit.search"``, AUD-4)."""
        check_limit(limit)
        query = check_query(query)
        statement = _filtered(select(*_RECORD_COLUMNS), query)
        if cursor:
            if not cursor.isdigit() or len(cursor) > 19:
                raise errors.ValidationFailed("cursor is not one this search returned")
            statement = statement.where(_r.c.seq < int(cursor))
        rows = conn.execute(statement.order_by(_r.c.seq.desc()).limit(limit + 1))
        return page_of([_record(row) for row in rows], limit, lambda r: str(r.seq))

    def count(self, conn: Connection, query: AuditQuery = EVERYTHING) -> int:
        statement = _filtered(select(func.count()).select_from(_r), check_query(query))
        return int(conn.execute(statement).scalar_one())

    def records(
        self,
        conn: Connection,
        *,
        after: int = 0,
        upto: int | None = None,
        query: AuditQuery | None = None,
        batch: int = VERIFY_BATCH,
    ) -> Iterator[list[AuditRecord]]:
        """Records with ``after < seq <= upto`` in seq order, in batches."""
        return read_records(
            conn, after=after, upto=upto, query=check_query(query or EVERYTHING), batch=batch
        )

    def export_csv(
        self, db: Database, query: AuditQuery = EVERYTHING, *, batch: int = 1_000
    ) -> Iterator[bytes]:
        """AUD-2 report: every matching record, oldest first, as CSV (UTF-8 with
        BOM, header row), streamed batch by batch — each batch its own short
        read, so a slow download holds no connection. Records appended after
        the export began are not included."""
        query = check_query(query)
        upto = db.read(lambda conn: conn.execute(select(func.max(_r.c.seq))).scalar_one()) or 0
        yield csv_header().encode()
        after = 0
        while True:

            def read(conn: Connection, start: int = after) -> list[AuditRecord]:
                return next(
                    read_records(conn, after=start, upto=upto, query=query, batch=batch), []
                )

            chunk = db.read(read)
            if not chunk:
                return
            yield csv_rows(chunk).encode()
            after = chunk[-1].seq

    # --- verification and checkpoints ---------------------------------------------------

    def verify(
        self,
        source: Connection | Database,
        checkpoints: LoadedCheckpoints | None = None,
        *,
        progress: Progress | None = None,
    ) -> AuditVerifyReport:
        """Check the whole chain against itself, its head row and the signed
        checkpoints (by default those in this log's checkpoint file)."""
        if checkpoints is None and self.checkpoints is not None:
            checkpoints = self.checkpoints.load()
        return verify(source, checkpoints, progress=progress)

    def checkpoint(self, db: Database) -> Checkpoint | None:
        """Sign the committed chain head and append it to the checkpoint file;
        ``None`` when the head has not moved since the last checkpoint.

        Refuses (``audit_chain_broken``) to sign a chain that does not verify
        from the previous checkpoint on, or that is shorter than it."""
        file = self._file()
        with file.locked():
            last = file.last()
            if isinstance(last, CheckpointProblem):
                raise errors.AuditChainBroken(
                    f"the newest line of {file.path} cannot be trusted: {last.detail}"
                )
            with consistent_read(db) as conn:
                head = self.head(conn)
                if head is None or head.seq == 0:
                    if last is not None:
                        raise errors.AuditChainBroken(
                            f"the audit chain is empty but seq {last.seq} was checkpointed"
                        )
                    return None
                if last is not None and head.seq < last.seq:
                    raise errors.AuditChainBroken(
                        f"the chain head is seq {head.seq} but seq {last.seq} was checkpointed"
                    )
                if last is not None and head.seq == last.seq:
                    if head.hash != last.hash:
                        raise errors.AuditChainBroken(
                            f"seq {head.seq} differs from the hash checkpointed for it"
                        )
                    return None
                # Only the stretch since the last checkpoint: its records must
                # chain onto the hash that checkpoint signed.
                start = GENESIS if last is None else ChainHead(last.seq, last.hash)
                found = report(_walk(conn, (), start=start, upto=head.seq), head)
                if found.first_break is not None:
                    raise errors.AuditChainBroken(
                        f"not signing a broken chain: {found.first_break}"
                    )
            cp = file.signer.sign(head.seq, head.hash, self.clock.now())
            file.append(cp)
        log.info("audit_checkpoint", seq=cp.seq, hash=cp.hash)
        return cp

    def checkpoint_if_due(self, db: Database, interval: timedelta) -> Checkpoint | None:
        """What the background loop calls: a checkpoint once ``interval`` has
        passed since the last one (and the head moved)."""
        last = self._file().last()
        if isinstance(last, Checkpoint) and self.clock.now() - last.at < interval:
            return None
        return self.checkpoint(db)

    def _file(self) -> CheckpointFile:
        if self.checkpoints is None:
            raise errors.ConfigurationError("this audit log has no checkpoint file")
        return self.checkpoints


def read_head(conn: Connection) -> ChainHead | None:
    row = conn.execute(select(_h.c.seq, _h.c.hash).where(_h.c.id == 1)).first()
    return None if row is None else ChainHead(row.seq, row.hash)


def _filtered(statement: Select[Any], query: AuditQuery) -> Select[Any]:
    if query.actor is not None:
        statement = statement.where(_r.c.actor == query.actor)
    if query.action is not None:
        statement = statement.where(_r.c.action == query.action)
    if query.target is not None:
        statement = statement.where(_r.c.target == query.target)
    if query.since is not None:
        statement = statement.where(_r.c.at >= query.since)
    if query.until is not None:
        statement = statement.where(_r.c.at < query.until)
    if query.keyword is not None:
        word = query.keyword.lower()
        statement = statement.where(
            or_(
                *(
                    func.lower(column).contains(word, autoescape=True)
                    for column in (_r.c.actor, _r.c.action, _r.c.target, _r.c.details)
                )
            )
        )
    return statement


def read_records(
    conn: Connection,
    *,
    after: int = 0,
    upto: int | None = None,
    query: AuditQuery | None = None,
    batch: int = VERIFY_BATCH,
) -> Iterator[list[AuditRecord]]:
    """Records with ``after < seq <= upto`` in seq order, in batches (keyset
    paging: memory stays flat for any chain length)."""
    while True:
        statement = select(*_RECORD_COLUMNS).where(_r.c.seq > after)
        if upto is not None:
            statement = statement.where(_r.c.seq <= upto)
        if query is not None:
            statement = _filtered(statement, query)
        rows = conn.execute(statement.order_by(_r.c.seq).limit(batch)).all()
        if not rows:
            return
        chunk = [_record(row) for row in rows]
        yield chunk
        if len(chunk) < batch:
            return
        after = chunk[-1].seq


def _walk(
    conn: Connection,
    signed: Iterable[SignedPoint],
    *,
    start: ChainHead,
    upto: int,
    progress: Progress | None = None,
) -> ChainChecker:
    """Feed the records ``start.seq < seq <= upto`` to a checker."""
    checker = ChainChecker(signed, start=start)
    total = max(0, upto - start.seq)
    for chunk in read_records(conn, after=start.seq, upto=upto):
        for r in chunk:
            checker.add(r)
        if progress is not None:
            progress(checker.checked, total)
    # Keyset paging sees a duplicated seq only within one batch; ask directly.
    duplicates = conn.execute(
        select(_r.c.seq)
        .where(_r.c.seq > start.seq, _r.c.seq <= upto)
        .group_by(_r.c.seq)
        .having(func.count() > 1)
    ).scalars()
    for seq in duplicates:
        checker.duplicate(seq)
    return checker


def verify(
    source: Connection | Database,
    checkpoints: LoadedCheckpoints | None = None,
    *,
    progress: Progress | None = None,
) -> AuditVerifyReport:
    """Verify the audit chain (AUD-3): every record's hash, every link, no gap
    or duplicate, the head row, and agreement with every checkpoint whose
    signature holds. The report names the first broken record.

    ``source`` is a connection (its transaction should be one snapshot) or a
    :class:`Database` (then one read-only snapshot is taken)."""
    if isinstance(source, Database):
        with consistent_read(source) as conn:
            return verify(conn, checkpoints, progress=progress)
    conn = source
    loaded = checkpoints or LoadedCheckpoints((), ())
    head = read_head(conn)
    newest = conn.execute(select(func.max(_r.c.seq))).scalar_one() or 0
    checker = _walk(
        conn,
        [cp.point for cp in loaded.trusted],
        start=GENESIS,
        upto=max(newest, head.seq if head else 0),
        progress=progress,
    )
    return report(checker, head, loaded.problems)
