"""``tongbao keys reencrypt``: move every subject to a fresh data key under the
current key version, and encrypt clear text left in registered columns.

Two passes, each over subjects in key order (a keyset cursor, so a run ends
even if some subject cannot be finished):

1. subjects with a live data key under an older key version;
2. subjects with a clear-text value in a registered column (rows written
   before the column was encrypted).

A subject is done in one transaction, a batch of subjects per transaction:

* its data keys are locked (``FOR UPDATE``). A writer that picked one of them
  (``FOR KEY SHARE`` in :meth:`KeyRing.writing_key`) finishes first, and its
  value is then seen and moved; a writer that comes later makes or uses a key
  under the current version;
* every value of the subject under an old key, or in clear, is sealed again
  under the subject's current data key — ``UPDATE … WHERE value = <as read>``,
  so a value changed meanwhile is left to its writer (and the next run);
* an old data key is deleted only when no registered column of the subject
  still refers to it; otherwise it is kept (and reported) for the next run.

So a killed run leaves every subject either untouched or finished, a re-run
continues where it stopped, and a run over finished data changes nothing.
Data keys of record classes without a registered column are never touched
(nobody could say whether they are still used) and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    MetaData,
    Table,
    and_,
    delete,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)

from tongbao import errors
from tongbao.security import tables as t
from tongbao.security.algorithms import FORMAT, is_ciphertext, parse_ciphertext

if TYPE_CHECKING:
    from tongbao.security.keyring import DataKey, EncryptedColumn, KeyRing
    from tongbao.storage import Database

_dk = t.data_keys


@dataclass(frozen=True, slots=True)
class ReencryptFailure:
    """A value that could not be opened; it stays as it is and keeps its key."""

    table: str
    column: str
    row: str  # primary key, "/"-joined
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReencryptReport:
    subjects: int = 0  # subjects visited
    reencrypted: int = 0  # values moved from an old data key to the current one
    encrypted: int = 0  # clear-text values encrypted
    changed_meanwhile: int = 0  # values a writer replaced during the run (theirs kept)
    keys_deleted: int = 0  # old data keys no longer used, deleted
    keys_kept: int = 0  # old data keys still referenced: run again
    shredded: int = 0  # subjects skipped because their data was destroyed
    unregistered_keys: int = 0  # old data keys of record classes no registered column covers
    batches: int = 0
    failures: tuple[ReencryptFailure, ...] = ()

    @property
    def complete(self) -> bool:
        """Nothing is left under an old key version (``keys retire`` will succeed)."""
        return not (self.keys_kept or self.unregistered_keys or self.failures)


@dataclass
class _Tally:
    subjects: int = 0
    reencrypted: int = 0
    encrypted: int = 0
    changed_meanwhile: int = 0
    keys_deleted: int = 0
    keys_kept: int = 0
    shredded: int = 0
    batches: int = 0
    failures: list[ReencryptFailure] = field(default_factory=list)
    last: Any = None  # keyset cursor: the last subject (or record id) of the batch
    size: int = 0  # subjects in the batch

    def add(self, other: _Tally) -> None:
        for name in (
            "subjects",
            "reencrypted",
            "encrypted",
            "changed_meanwhile",
            "keys_deleted",
            "keys_kept",
            "shredded",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures
        self.batches += 1


@dataclass(frozen=True, slots=True)
class _Column:
    spec: EncryptedColumn
    table: Table

    def subject_rows(self, conn: Connection, record_id: str) -> list[Any]:
        pk = list(self.table.primary_key.columns)
        value = self.table.c[self.spec.column]
        return list(
            conn.execute(
                select(*pk, value.label("_value")).where(
                    self.table.c[self.spec.subject_column] == record_id
                )
            )
        )

    def refers_to(self, conn: Connection, record_id: str, dek_id: str) -> bool:
        value = self.table.c[self.spec.column]
        found = conn.execute(
            select(literal(1))
            .where(
                self.table.c[self.spec.subject_column] == record_id,
                value.startswith(f"{FORMAT}:{dek_id}:", autoescape=True),
            )
            .limit(1)
        ).first()
        return found is not None


def reencrypt(
    keyring: KeyRing,
    db: Database,
    columns: Sequence[EncryptedColumn],
    *,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> ReencryptReport:
    """Run both passes; ``progress(done, total)`` after every batch (``total``
    is estimated up front)."""
    if batch_size < 1:
        raise errors.ValidationFailed("the batch size must be at least 1")
    resolved = db.read(partial(_resolve, columns))
    by_class: dict[str, list[_Column]] = {}
    for column in resolved:
        by_class.setdefault(column.spec.record_class, []).append(column)
    classes = sorted(by_class)
    total = db.read(partial(_count_work, keyring, resolved, classes))
    tally, done = _Tally(), 0

    def run_pass(batch: Callable[..., _Tally], scope: Any) -> None:
        """``batch(keyring, by_class, scope, after, size, conn)`` until a short batch."""
        nonlocal done
        after: Any = None
        while True:
            result = db.run(
                partial(batch, keyring, by_class, scope, after, batch_size), what="reencrypt"
            )
            tally.add(result)
            done += result.size
            if progress is not None:
                progress(min(done, total), total)
            if result.size < batch_size:
                return
            after = result.last

    run_pass(_stale_batch, classes)
    for column in resolved:
        run_pass(_clear_batch, column)
    if progress is not None:
        progress(total, total)
    unregistered = db.read(partial(_unregistered_keys, keyring, classes))
    return ReencryptReport(
        subjects=tally.subjects,
        reencrypted=tally.reencrypted,
        encrypted=tally.encrypted,
        changed_meanwhile=tally.changed_meanwhile,
        keys_deleted=tally.keys_deleted,
        keys_kept=tally.keys_kept,
        shredded=tally.shredded,
        unregistered_keys=unregistered,
        batches=tally.batches,
        failures=tuple(tally.failures),
    )


def _resolve(columns: Sequence[EncryptedColumn], conn: Connection) -> list[_Column]:
    """Each registered column with its table, as the database has it (reflected:
    this module knows no other capability's table definitions)."""
    names = sorted({c.table for c in columns})
    reflected = MetaData()
    missing = [n for n in names if not conn.dialect.has_table(conn, n)]
    if missing:
        raise errors.ConfigurationError(f"registered encrypted columns name no table: {missing}")
    reflected.reflect(bind=conn, only=names)
    resolved = []
    for spec in columns:
        table = reflected.tables[spec.table]
        for name in (spec.column, spec.subject_column):
            if name not in table.c:
                raise errors.ConfigurationError(f"{spec.table} has no column {name!r}")
        if not table.primary_key.columns:
            raise errors.ConfigurationError(f"{spec.table} has no primary key")
        resolved.append(_Column(spec, table))
    return resolved


def _stale(keyring: KeyRing, conn: Connection, classes: list[str]) -> list[Any]:
    return [
        _dk.c.kek_version != keyring.current_version(conn),
        _dk.c.shredded_at.is_(None),
        _dk.c.record_class.in_(classes),
    ]


def _clear_text(column: _Column) -> list[Any]:
    value = column.table.c[column.spec.column]
    return [value.is_not(None), not_(value.startswith(f"{FORMAT}:", autoescape=True))]


def _count_work(
    keyring: KeyRing, columns: list[_Column], classes: list[str], conn: Connection
) -> int:
    total = conn.execute(
        select(func.count(_dk.c.subject.distinct())).where(*_stale(keyring, conn, classes))
    ).scalar_one()
    # Columns of one table and subject column are counted together (a row with
    # two clear-text columns is one subject); across tables it is an estimate.
    groups: dict[tuple[str, str], list[_Column]] = {}
    for column in columns:
        groups.setdefault((column.spec.table, column.spec.subject_column), []).append(column)
    for (_, subject_column), group in groups.items():
        subject = group[0].table.c[subject_column]
        total += conn.execute(
            select(func.count(subject.distinct())).where(
                or_(*(and_(*_clear_text(column)) for column in group))
            )
        ).scalar_one()
    return int(total)


def _unregistered_keys(keyring: KeyRing, classes: list[str], conn: Connection) -> int:
    current = keyring.current_version(conn)
    query = select(func.count()).where(_dk.c.kek_version != current, _dk.c.shredded_at.is_(None))
    if classes:
        query = query.where(_dk.c.record_class.not_in(classes))
    return int(conn.execute(query).scalar_one())


def _stale_batch(
    keyring: KeyRing,
    by_class: dict[str, list[_Column]],
    classes: list[str],
    after: str | None,
    size: int,
    conn: Connection,
) -> _Tally:
    query = select(_dk.c.subject).where(*_stale(keyring, conn, classes))
    if after is not None:
        query = query.where(_dk.c.subject > after)
    subjects = list(
        conn.execute(query.group_by(_dk.c.subject).order_by(_dk.c.subject).limit(size)).scalars()
    )
    tally = _Tally(last=subjects[-1] if subjects else None, size=len(subjects))
    for subject in subjects:
        _move_subject(keyring, by_class, subject, tally, conn)
    return tally


def _clear_batch(
    keyring: KeyRing,
    by_class: dict[str, list[_Column]],
    column: _Column,
    after: Any,
    size: int,
    conn: Connection,
) -> _Tally:
    subject_column = column.table.c[column.spec.subject_column]
    query = select(subject_column).where(*_clear_text(column))
    if after is not None:
        query = query.where(subject_column > after)
    ids = list(
        conn.execute(query.group_by(subject_column).order_by(subject_column).limit(size)).scalars()
    )
    tally = _Tally(last=ids[-1] if ids else None, size=len(ids))
    for record_id in ids:
        _move_subject(keyring, by_class, column.spec.subject(record_id), tally, conn)
    return tally


def _move_subject(
    keyring: KeyRing,
    by_class: dict[str, list[_Column]],
    subject: str,
    tally: _Tally,
    conn: Connection,
) -> None:
    record_class, _, record_id = subject.partition(":")
    columns = by_class.get(record_class, [])
    current = keyring.current_version(conn)
    keys = conn.execute(
        select(_dk.c.dek_id, _dk.c.kek_version, _dk.c.shredded_at)
        .where(_dk.c.subject == subject)
        .order_by(_dk.c.dek_id)
        .with_for_update()
    ).all()
    tally.subjects += 1
    if any(k.shredded_at is not None for k in keys):
        tally.shredded += 1
        return
    old = {k.dek_id for k in keys if k.kek_version != current}
    target: DataKey | None = None
    for column in columns:
        spec = column.spec
        pk = list(column.table.primary_key.columns)
        value_column = column.table.c[spec.column]
        for row in column.subject_rows(conn, record_id):
            value = row._mapping["_value"]
            if value is None:
                continue
            if is_ciphertext(value):
                parsed = parse_ciphertext(value)
                if parsed.dek_id not in old:
                    continue
                try:
                    plaintext = keyring.data_key(conn, parsed.dek_id).open(spec.field, parsed)
                except errors.TongbaoError as exc:
                    tally.failures.append(
                        ReencryptFailure(
                            spec.table,
                            spec.column,
                            "/".join(str(row._mapping[c.name]) for c in pk),
                            exc.code,
                            exc.detail,
                        )
                    )
                    continue
                moved_from_key = True
            else:
                plaintext, moved_from_key = value, False
            if target is None:
                target = keyring.writing_key(conn, subject, record_class)
            changed = conn.execute(
                update(column.table)
                .where(*(c == row._mapping[c.name] for c in pk), value_column == value)
                .values({spec.column: target.seal(spec.field, plaintext)})
            ).rowcount
            if not changed:
                tally.changed_meanwhile += 1
            elif moved_from_key:
                tally.reencrypted += 1
            else:
                tally.encrypted += 1
    for dek_id in sorted(old):
        if any(column.refers_to(conn, record_id, dek_id) for column in columns):
            tally.keys_kept += 1
        else:
            conn.execute(delete(_dk).where(_dk.c.dek_id == dek_id))
            tally.keys_deleted += 1
