"""AUD-3: tampering with the audit log is detected and the first broken record
named — on both engines, by someone who edits the table directly (switching
off the append-only triggers, as its owner can), rewrites the chain head,
or edits the checkpoint file.

The chain under attack has ten records; seq 6 and seq 10 were checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from tongbao import errors
from tongbao.audit import AuditLog, AuditRecord, BreakKind, CheckpointSigner
from tongbao.audit import tables as t
from tongbao.audit.checkpoints import parse_line, to_line
from tongbao.audit.model import GENESIS_HASH, make_entry, seal
from tongbao.clock import ManualClock
from tongbao.storage import Database

from .audit_helpers import new_log, rows, tamper, write

r = t.records


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "audit-checkpoints.jsonl"


@pytest.fixture
def audit(db: Database, clock: ManualClock, checkpoint_path: Path) -> AuditLog:
    log = new_log(clock, checkpoint_path)
    write(db, log, clock, 6)
    assert log.checkpoint(db) is not None
    write(db, log, clock, 4, start=7)
    assert log.checkpoint(db) is not None
    assert log.verify(db).ok
    return log


def record(db: Database, seq: int) -> AuditRecord:
    with db.snapshot() as conn:
        row = conn.execute(select(r).where(r.c.seq == seq)).mappings().one()
    return AuditRecord(**row)


def values(rec: AuditRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in AuditRecord.__slots__}


def first_break(audit: AuditLog, db: Database) -> tuple[int, BreakKind]:
    report = audit.verify(db)
    assert not report.ok
    assert report.first_break is not None, report.checkpoint_problems
    return report.first_break.seq, report.first_break.kind


def set_fields(seq: int, **changes: Any) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(update(r).where(r.c.seq == seq).values(**changes))


def rewind_head(db: Database, to: int) -> None:
    kept = record(db, to)
    with db.transaction() as conn:
        conn.execute(update(t.chain_head).values(seq=kept.seq, hash=kept.hash))


# --- the database refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET target = 'x' WHERE seq = 3",
        "DELETE FROM audit_records WHERE seq = 3",
    ],
)
def test_the_database_refuses_to_change_or_delete_records(
    db: Database, audit: AuditLog, statement: str
) -> None:
    """AUD-3: append-only in the database itself, whatever the application does."""
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as conn:
        conn.execute(text(statement))
    assert audit.verify(db).ok


# --- modification -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("at", "+1s"),
        ("actor", "staff:someone_else"),
        ("action", "customer.view"),
        ("target", "customer:cus_other"),
        ("outcome", "refused"),
        ("source_ip", None),
        ("before_digest", "0" * 64),
        ("after_digest", None),
        ("details", '{"n":4,"note":"第4条"} '),
        ("algorithm", "SM3"),
        ("hash", "f" * 64),
    ],
)
def test_a_changed_field_breaks_the_chain_at_that_record(
    db: Database, audit: AuditLog, field: str, value: Any
) -> None:
    """AUD-3: any field of record 4 changed — even one character, even a
    time moved by a second — and verification names seq 4."""
    if value == "+1s":
        value = record(db, 4).at + timedelta(seconds=1)
    tamper(db, set_fields(4, **{field: value}))
    assert first_break(audit, db) == (4, BreakKind.MODIFIED)


def test_a_changed_link_breaks_the_chain_at_that_record(db: Database, audit: AuditLog) -> None:
    tamper(db, set_fields(4, prev_hash="a" * 64))
    report = audit.verify(db)
    assert [(b.seq, b.kind) for b in report.breaks] == [
        (4, BreakKind.MODIFIED),
        (4, BreakKind.UNLINKED),
    ]


def test_a_changed_and_rehashed_record_breaks_the_link_to_the_next(
    db: Database, audit: AuditLog
) -> None:
    """AUD-3: re-hashing the edited record 4 hides it from its own check, not
    from its successor, whose prev_hash still names the original."""
    forged = seal(
        make_entry(actor="staff:staff_1", action="customer.update", target="customer:cus_other"),
        seq=4,
        at=record(db, 4).at,
        prev_hash=record(db, 3).hash,
    )
    tamper(db, set_fields(4, **{k: v for k, v in values(forged).items() if k != "seq"}))
    assert first_break(audit, db) == (5, BreakKind.UNLINKED)


@pytest.mark.parametrize(("rewrite_from", "named"), [(4, 6), (8, 10)])
def test_a_consistently_rewritten_tail_diverges_from_the_signed_checkpoint(
    db: Database, audit: AuditLog, rewrite_from: int, named: int
) -> None:
    """AUD-3: an attacker who rewrites every record from ``rewrite_from`` on and
    re-links them all leaves a chain that checks out on its own — but not
    against the checkpoint signed for seq 6 or 10, which verification names."""
    prev = record(db, rewrite_from - 1).hash
    forged = []
    for seq in range(rewrite_from, 11):
        original = record(db, seq)
        rec = seal(
            make_entry(actor=original.actor, action=original.action, target="customer:cus_x"),
            seq=seq,
            at=original.at,
            prev_hash=prev,
        )
        forged.append(rec)
        prev = rec.hash

    def rewrite(conn: Connection) -> None:
        for rec in forged:
            conn.execute(update(r).where(r.c.seq == rec.seq).values(**values(rec)))
        conn.execute(update(t.chain_head).values(seq=10, hash=prev))

    tamper(db, rewrite)
    report = audit.verify(db)
    assert (report.breaks[0].seq, report.breaks[0].kind) == (named, BreakKind.DIVERGED)
    assert "rewritten" in report.breaks[0].detail


# --- deletion -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("deleted", "named"), [((5,), 5), ((1,), 1), ((4, 5, 6), 4)])
def test_a_deleted_record_leaves_a_gap_that_is_named(
    db: Database, audit: AuditLog, deleted: tuple[int, ...], named: int
) -> None:
    tamper(db, lambda conn: conn.execute(r.delete().where(r.c.seq.in_(deleted))))
    report = audit.verify(db)
    assert (report.breaks[0].seq, report.breaks[0].kind) == (named, BreakKind.MISSING)
    assert f"seq {named}" in report.breaks[0].detail


def test_removing_the_newest_records_is_caught_by_the_chain_head(
    db: Database, audit: AuditLog
) -> None:
    """AUD-3: records 8-10 deleted, the head row left as it was."""
    tamper(db, lambda conn: conn.execute(r.delete().where(r.c.seq >= 8)))
    assert first_break(audit, db) == (8, BreakKind.TRUNCATED)


def test_removing_the_newest_records_and_rewinding_the_head_is_caught_by_the_checkpoint(
    db: Database, audit: AuditLog
) -> None:
    """AUD-3: the chain 1-7 is perfect in itself and the head row agrees — only
    the checkpoint signed for seq 10, outside the database, shows the loss."""
    tamper(db, lambda conn: conn.execute(r.delete().where(r.c.seq >= 8)))
    rewind_head(db, 7)
    report = audit.verify(db)
    assert [(b.seq, b.kind) for b in report.breaks] == [(8, BreakKind.TRUNCATED)]
    assert "covers seq 10" in report.breaks[0].detail


# --- insertion ---------------------------------------------------------------------------------


def _fabricated(db: Database, seq: int, prev_hash: str) -> AuditRecord:
    return seal(
        make_entry(actor="staff:staff_1", action="payment.approve", target="payment:pay_fake"),
        seq=seq,
        at=record(db, 10).at + timedelta(seconds=1),
        prev_hash=prev_hash,
    )


def test_an_appended_record_that_does_not_chain_is_named(db: Database, audit: AuditLog) -> None:
    fake = _fabricated(db, 11, "b" * 64)
    tamper(db, lambda conn: conn.execute(insert(r), values(fake)))
    assert first_break(audit, db) == (11, BreakKind.UNLINKED)


def test_a_well_forged_appended_record_is_caught_by_the_chain_head(
    db: Database, audit: AuditLog
) -> None:
    """AUD-3: a correctly linked fabrication appended behind the log's back:
    the head row, which every real append moves, does not count it."""
    fake = _fabricated(db, 11, record(db, 10).hash)
    with db.transaction() as conn:  # an INSERT needs no trigger out of the way
        conn.execute(insert(r), values(fake))
    assert first_break(audit, db) == (11, BreakKind.HEAD_MISMATCH)


@pytest.mark.parametrize(
    ("at", "named"), [(4, (5, BreakKind.MODIFIED)), (6, (6, BreakKind.DIVERGED))]
)
def test_a_record_inserted_in_the_middle_is_named(
    db: Database, audit: AuditLog, at: int, named: tuple[int, BreakKind]
) -> None:
    """AUD-3: the records from ``at`` on renumbered one up to make room for a
    fabricated record that links correctly to its predecessor. The renumbered
    record after it no longer checks (its seq is in its hash); where a
    checkpoint covered the position, the fabrication itself is named."""
    fake = _fabricated(db, at, record(db, at - 1).hash)

    def insert_in_middle(conn: Connection) -> None:
        # Two steps, so no seq collides with the primary key on the way.
        conn.execute(update(r).where(r.c.seq >= at).values(seq=r.c.seq + 1000))
        conn.execute(update(r).where(r.c.seq >= 1000).values(seq=r.c.seq - 999))
        conn.execute(insert(r), values(fake))
        conn.execute(update(t.chain_head).values(seq=11))

    tamper(db, insert_in_middle)
    assert [x["seq"] for x in rows(db)] == list(range(1, 12))
    assert first_break(audit, db) == named


@pytest.fixture
def without_primary_key(db: Database) -> Iterator[None]:
    """The table as an owner could make it: the key that forbids a second seq 5
    dropped. PostgreSQL's shared test database gets the key back afterwards."""
    if db.dialect == "sqlite":
        with db.transaction() as conn:  # SQLite cannot drop a key: rebuild the table
            conn.exec_driver_sql("CREATE TABLE audit_copy AS SELECT * FROM audit_records")
            conn.exec_driver_sql("DROP TABLE audit_records")
            conn.exec_driver_sql("ALTER TABLE audit_copy RENAME TO audit_records")
        yield
        return
    with db.transaction() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_records DROP CONSTRAINT pk_audit_records")
    try:
        yield
    finally:
        with db.transaction() as conn:
            conn.exec_driver_sql("TRUNCATE audit_records")
            conn.exec_driver_sql(
                "ALTER TABLE audit_records ADD CONSTRAINT pk_audit_records PRIMARY KEY (seq)"
            )


def test_the_database_refuses_a_second_record_with_the_same_seq(
    db: Database, audit: AuditLog
) -> None:
    copy = values(record(db, 5))
    with pytest.raises(DBAPIError), db.transaction() as conn:
        conn.execute(insert(r), copy)


@pytest.mark.parametrize("copy_of", [5, 10])
def test_a_duplicated_seq_is_named(
    db: Database, audit: AuditLog, without_primary_key: None, copy_of: int
) -> None:
    """AUD-3: with the key dropped, a second record 5 (or 10) is inserted."""
    duplicate = {**values(record(db, copy_of)), "target": "customer:cus_fake"}
    with db.transaction() as conn:
        conn.execute(insert(r), duplicate)
    assert (copy_of, BreakKind.DUPLICATE) in [(b.seq, b.kind) for b in audit.verify(db).breaks]
    assert first_break(audit, db)[0] == copy_of


# --- reordering --------------------------------------------------------------------------------


def test_swapped_records_are_named_at_the_first_of_them(db: Database, audit: AuditLog) -> None:
    """AUD-3: records 4 and 5 trade places (every field but seq)."""
    four, five = values(record(db, 4)), values(record(db, 5))

    def swap(conn: Connection) -> None:
        conn.execute(update(r).where(r.c.seq == 4).values({**five, "seq": 4}))
        conn.execute(update(r).where(r.c.seq == 5).values({**four, "seq": 5}))

    tamper(db, swap)
    assert first_break(audit, db) == (4, BreakKind.MODIFIED)


def test_swapped_seq_numbers_are_named_at_the_first_of_them(db: Database, audit: AuditLog) -> None:
    """AUD-3: records 4 and 5 renumbered as 5 and 4, hashes and all."""

    def swap(conn: Connection) -> None:
        conn.execute(update(r).where(r.c.seq == 4).values(seq=-4))
        conn.execute(update(r).where(r.c.seq == 5).values(seq=4))
        conn.execute(update(r).where(r.c.seq == -4).values(seq=5))

    tamper(db, swap)
    assert first_break(audit, db) == (4, BreakKind.MODIFIED)


# --- the chain head row ---------------------------------------------------------------------------


def test_an_edited_chain_head_is_named(db: Database, audit: AuditLog) -> None:
    with db.transaction() as conn:
        conn.execute(update(t.chain_head).values(hash="c" * 64))
    assert first_break(audit, db) == (10, BreakKind.HEAD_MISMATCH)


# --- the checkpoint file -----------------------------------------------------------------------


def test_a_forged_checkpoint_is_refused_and_the_truncation_it_hides_is_found(
    db: Database, audit: AuditLog, checkpoint_path: Path
) -> None:
    """AUD-3: records 8-10 removed, the head rewound, and the last checkpoint
    edited to claim seq 7: its signature no longer verifies, so it is reported
    and not trusted."""
    tamper(db, lambda conn: conn.execute(r.delete().where(r.c.seq >= 8)))
    rewind_head(db, 7)
    lines = checkpoint_path.read_text().splitlines()
    last = parse_line(lines[1])
    seven = record(db, 7)
    forged = to_line(type(last)(7, seven.hash, last.at, last.key_id, last.signature))
    checkpoint_path.write_text(lines[0] + "\n" + forged + "\n")
    report = audit.verify(db)
    assert not report.ok
    assert report.breaks == ()
    assert [str(p) for p in report.checkpoint_problems] == [
        "checkpoint file line 2: the signature does not verify (claims seq 7): altered or forged"
    ]
    with pytest.raises(errors.AuditChainBroken, match="cannot be trusted"):
        audit.checkpoint(db)  # nor is anything signed on top of it


def test_a_checkpoint_signed_with_another_key_is_refused(
    db: Database, audit: AuditLog, checkpoint_path: Path
) -> None:
    """AUD-3: whoever rewrote the chain cannot sign for it without the key."""
    tamper(db, lambda conn: conn.execute(r.delete().where(r.c.seq >= 8)))
    rewind_head(db, 7)
    impostor = CheckpointSigner(b"\x01" * 32).sign(7, record(db, 7).hash, audit.clock.now())
    with checkpoint_path.open("a") as f:
        f.write(to_line(impostor) + "\n")
    report = audit.verify(db)
    assert not report.ok
    assert [(b.seq, b.kind) for b in report.breaks] == [(8, BreakKind.TRUNCATED)]
    assert len(report.checkpoint_problems) == 1
    assert "unknown key" in report.checkpoint_problems[0].detail
    assert report.checkpoint_problems[0].line == 3


@pytest.mark.parametrize("garbage", ["not json", '{"v":1}', "{" + "\x00" * 3])
def test_an_unreadable_checkpoint_line_is_reported(
    db: Database, audit: AuditLog, checkpoint_path: Path, garbage: str
) -> None:
    with checkpoint_path.open("a") as f:
        f.write(garbage + "\n")
    report = audit.verify(db)
    assert not report.ok and report.breaks == ()
    assert report.checkpoint_problems[0].line == 3
    assert "unreadable" in report.checkpoint_problems[0].detail


def test_a_checkpoint_cut_short_by_a_crash_does_not_spoil_the_next(
    db: Database, audit: AuditLog, clock: ManualClock, checkpoint_path: Path
) -> None:
    """A half-written last line (crash) is reported, and the next checkpoint
    starts on a line of its own once the operator has looked at it."""
    whole = checkpoint_path.read_text()
    checkpoint_path.write_text(whole + '{"v":1,"seq":11,"ha')
    assert [p.line for p in audit.verify(db).checkpoint_problems] == [3]
    checkpoint_path.write_text(whole)  # the operator removes the fragment
    write(db, audit, clock, 1, start=11)
    assert audit.checkpoint(db) is not None
    assert audit.verify(db).ok


def test_an_empty_chain_with_an_empty_head_verifies(
    db: Database, clock: ManualClock, tmp_path: Path
) -> None:
    report = new_log(clock, tmp_path / "none.jsonl").verify(db)
    assert report.ok and report.records == 0 and report.head.hash == GENESIS_HASH


def test_a_fully_emptied_log_is_caught_by_its_checkpoints(db: Database, audit: AuditLog) -> None:
    """AUD-3: every record and the head row gone — the checkpoints remain."""
    tamper(db, lambda conn: conn.execute(r.delete()))
    with db.transaction() as conn:
        conn.execute(t.chain_head.delete())
    assert first_break(audit, db) == (1, BreakKind.TRUNCATED)
