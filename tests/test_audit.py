"""The audit log as an auditor relies on it, on both engines: records written
in the same transaction as the action (AUD-1), no personal data in clear
(DATA-2), one gap-free hash chain also under concurrent writers (AUD-3),
signed checkpoints, SM3, search and CSV export (AUD-2), reads of personal
data recorded (AUD-4), and the ``tongbao audit`` commands."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Connection, func, select, update

from tongbao import errors
from tongbao.audit import (
    SIGNING_PURPOSE,
    AuditLog,
    AuditQuery,
    BreakKind,
    CheckpointFile,
    CheckpointSigner,
)
from tongbao.audit import tables as t
from tongbao.audit.checkpoints import parse_line
from tongbao.audit.model import GENESIS_HASH, canonical_record, digest, make_entry, seal
from tongbao.clock import SHANGHAI, ManualClock
from tongbao.platform import Platform
from tongbao.storage import Database

from .audit_helpers import SEED, cli, new_log, rows, tamper, write
from .conftest import START


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints" / "audit.jsonl"


@pytest.fixture
def audit(clock: ManualClock, checkpoint_path: Path) -> AuditLog:
    return new_log(clock, checkpoint_path)


def count_records(db: Database) -> int:
    with db.snapshot() as conn:
        return int(conn.execute(select(func.count()).select_from(t.records)).scalar_one())


# --- writing (AUD-1) -----------------------------------------------------------------


def test_a_record_shares_the_fate_of_the_transaction_it_records(
    db: Database, audit: AuditLog
) -> None:
    """AUD-1: committed with the action, rolled back with it — and a rolled-back
    record leaves no gap in the chain."""
    first = db.run(
        lambda conn: audit.record(conn, actor="staff:staff_a", action="x.do", target="thing:1")
    )
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH

    class ActionFailedError(Exception):
        pass

    def action_that_fails(conn: Connection) -> None:
        audit.record(conn, actor="staff:staff_a", action="x.do", target="thing:2")
        raise ActionFailedError

    with pytest.raises(ActionFailedError):
        db.run(action_that_fails)
    assert [r["target"] for r in rows(db)] == ["thing:1"]

    second = db.run(
        lambda conn: audit.record(conn, actor="staff:staff_a", action="x.do", target="thing:3")
    )
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert audit.verify(db).ok


def test_a_record_keeps_who_what_when_where_and_the_outcome(
    db: Database, audit: AuditLog, clock: ManualClock
) -> None:
    """AUD-1/AUD-4: time, person, action, target, source address and outcome are kept."""
    db.run(
        lambda conn: audit.record(
            conn,
            actor="staff:staff_01",
            action="payment.approve",
            target="payment:pay_01",
            outcome="refused",
            source_ip="203.0.113.9",
            details={"code": "permission_denied"},
        )
    )
    (row,) = rows(db)
    assert row["at"] == START
    assert (row["actor"], row["action"], row["target"]) == (
        "staff:staff_01",
        "payment.approve",
        "payment:pay_01",
    )
    assert (row["outcome"], row["source_ip"]) == ("refused", "203.0.113.9")
    assert orjson.loads(row["details"]) == {"code": "permission_denied"}


def test_before_and_after_states_are_kept_only_as_digests(db: Database, audit: AuditLog) -> None:
    """DATA-2: a change to personal data is provable from the log (the digest of
    the state matches), yet the log never holds the data itself."""
    before = {"phone": "13800138000", "name": "张三"}
    after = {"name": "张三", "phone": "13900139000"}
    record = db.run(
        lambda conn: audit.record(
            conn,
            actor="staff:staff_01",
            action="customer.update",
            target="customer:cus_01",
            before=before,
            after=after,
        )
    )
    (row,) = rows(db)
    stored = " ".join(str(value) for value in row.values())
    for secret in ("13800138000", "13900139000", "张三"):
        assert secret not in stored
    canonical = '{"name":"张三","phone":"13900139000"}'.encode()
    assert row["after_digest"] == hashlib.sha256(canonical).hexdigest() == record.after_digest
    assert row["before_digest"] != row["after_digest"]


def test_texts_in_details_pass_through_the_redaction_hook(db: Database, clock: ManualClock) -> None:
    """DATA-2: details are meant to be free of personal data; the masking hook
    the platform wires in catches a mobile number that slipped in anyway."""
    audit = AuditLog(clock, redact=lambda text: re.sub(r"1\d{10}", "1**********", text))
    db.run(
        lambda conn: audit.record(
            conn,
            actor="system:test",
            action="notify.sms",
            target="customer:cus_01",
            details={"note": "sent to 13800138000", "nested": [{"to": "13900139000"}], "n": 3},
        )
    )
    (row,) = rows(db)
    assert orjson.loads(row["details"]) == {
        "n": 3,
        "nested": [{"to": "1**********"}],
        "note": "sent to 1**********",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actor": "someone"}, "actor"),
        ({"actor": ""}, "actor"),
        ({"action": ""}, "action"),
        ({"action": "x" * 101}, "action"),
        ({"target": "a\nb"}, "target"),
        ({"outcome": "OK!"}, "outcome"),
        ({"source_ip": "1" * 46}, "source_ip"),
        ({"details": {"when": object()}}, "JSON"),
        ({"details": {1: "not a text key"}}, "JSON"),
        ({"details": {"big": "x" * 20_000}}, "details"),
        ({"before": ["not", "a", "mapping"]}, "before"),
        ({"after": {"set": {1, 2}}}, "JSON"),
    ],
)
def test_malformed_records_are_refused_and_change_nothing(
    db: Database, audit: AuditLog, change: dict[str, Any], message: str
) -> None:
    """Bad input gets ``validation_failed`` naming the field; nothing is written
    and the chain head does not move."""
    fields: dict[str, Any] = {"actor": "staff:staff_01", "action": "x.do", "target": "thing:1"}
    fields.update(change)
    with pytest.raises(errors.ValidationFailed, match=message):
        db.run(lambda conn: audit.record(conn, **fields))
    assert count_records(db) == 0
    with db.snapshot() as conn:
        assert audit.head(conn) is None


def test_reads_of_personal_data_record_who_read_which_fields_of_how_many(
    db: Database, audit: AuditLog
) -> None:
    """AUD-4: data-store access logged with time, person and content — the
    fields and the number of records, never the values."""
    record = db.run(
        lambda conn: audit.record_read(
            conn,
            actor="staff:staff_07",
            target="customers?phone",
            fields=["phone", "name", "phone"],
            count=12,
            source_ip="10.1.2.3",
        )
    )
    assert (record.action, record.target, record.actor) == (
        "data.read",
        "customers?phone",
        "staff:staff_07",
    )
    assert record.details_data == {"fields": ["name", "phone"], "count": 12}
    with pytest.raises(errors.ValidationFailed):
        db.run(
            lambda conn: audit.record_read(
                conn, actor="staff:staff_07", target="customers", fields="phone", count=1
            )
        )
    with pytest.raises(errors.ValidationFailed):
        db.run(
            lambda conn: audit.record_read(
                conn, actor="staff:staff_07", target="customers", fields=["phone"], count=-1
            )
        )
    assert count_records(db) == 1


# --- the chain (AUD-3) ---------------------------------------------------------------------


def test_records_form_one_verified_chain(db: Database, audit: AuditLog, clock: ManualClock) -> None:
    """AUD-3: seq 1..n without gaps, each linked to its predecessor's hash."""
    written = write(db, audit, clock, 25)
    stored = rows(db)
    assert [r["seq"] for r in stored] == list(range(1, 26))
    assert stored[0]["prev_hash"] == GENESIS_HASH
    for previous, current in itertools.pairwise(stored):
        assert current["prev_hash"] == previous["hash"]
    report = audit.verify(db)
    assert report.ok, report.breaks
    assert (report.records, report.head.seq, report.head.hash) == (25, 25, written[-1].hash)
    with db.snapshot() as conn:
        head = audit.head(conn)
    assert head is not None and (head.seq, head.hash) == (25, written[-1].hash)


def test_the_chain_can_use_sm3_and_switch_algorithms_without_breaking(
    db: Database, clock: ManualClock, checkpoint_path: Path
) -> None:
    """SEC-12/AUD-3: SM3 (the national algorithm) instead of SHA-256; records
    keep the algorithm they were sealed with, so switching keeps old ones valid."""
    sha = new_log(clock, checkpoint_path)
    write(db, sha, clock, 3)
    sm3 = new_log(clock, checkpoint_path, algorithm="SM3")
    written = write(db, sm3, clock, 3, start=4)
    stored = rows(db)
    assert [r["algorithm"] for r in stored] == ["SHA-256"] * 3 + ["SM3"] * 3
    record = written[-1]
    assert record.hash == digest("SM3", canonical_record(record))
    assert record.hash != hashlib.sha256(canonical_record(record)).hexdigest()
    assert record.before_digest == digest("SM3", b'{"n":6,"phone":"13800138000"}')
    assert stored[3]["prev_hash"] == stored[2]["hash"]
    assert sm3.verify(db).ok
    assert sha.checkpoint(db) is not None and sm3.verify(db).ok


def test_an_unknown_digest_algorithm_is_refused_at_start_up(clock: ManualClock) -> None:
    with pytest.raises(errors.ConfigurationError):
        AuditLog(clock, algorithm="MD5")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_writers_make_one_gap_free_chain(
    db: Database, audit: AuditLog, backend: str
) -> None:
    """AUD-3 on PostgreSQL: transactions appending at the same time queue on the
    chain head, so the chain stays linear — no fork, no gap, no duplicate —
    including the very first append, which creates the head row."""
    threads, each = 8, 25
    barrier = threading.Barrier(threads)
    seqs: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                record = db.run(
                    lambda conn, i=i: audit.record(
                        conn, actor=f"staff:staff_{n}", action="x.do", target=f"thing:{n}:{i}"
                    )
                )
                with lock:
                    seqs.append(record.seq)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures, failures
    assert sorted(seqs) == list(range(1, threads * each + 1))
    report = audit.verify(db)
    assert report.ok, report.breaks
    assert report.records == threads * each


def test_verification_walks_a_long_chain_in_batches_and_reports_progress(
    db: Database, clock: ManualClock, checkpoint_path: Path
) -> None:
    """AUD-3: a long chain is verified batch by batch (flat memory) with progress."""
    entry = make_entry(actor="system:bulk", action="bulk.load", target="thing", details={"k": 1})
    records, prev = [], GENESIS_HASH
    for seq in range(1, 12_001):
        record = seal(entry, seq=seq, at=START + timedelta(milliseconds=seq), prev_hash=prev)
        records.append({name: getattr(record, name) for name in record.__slots__})
        prev = record.hash
    with db.transaction() as conn:
        conn.execute(t.records.insert(), records)
        conn.execute(
            t.chain_head.insert(), {"id": 1, "seq": 12_000, "hash": prev, "updated_at": START}
        )
    seen: list[tuple[int, int]] = []
    report = new_log(clock, checkpoint_path).verify(
        db, progress=lambda done, total: seen.append((done, total))
    )
    assert report.ok and report.records == 12_000
    assert seen == [(5_000, 12_000), (10_000, 12_000), (12_000, 12_000)]


# --- checkpoints ---------------------------------------------------------------------------


def test_a_checkpoint_signs_the_committed_head_outside_the_database(
    db: Database, audit: AuditLog, clock: ManualClock, checkpoint_path: Path
) -> None:
    """AUD-3: the head (seq, hash, time) is signed with Ed25519 and appended to
    the checkpoint file, whose directory is created; nothing new, no checkpoint."""
    written = write(db, audit, clock, 4)
    cp = audit.checkpoint(db)
    assert cp is not None and (cp.seq, cp.hash, cp.at) == (4, written[-1].hash, clock.now())
    lines = checkpoint_path.read_text().splitlines()
    assert len(lines) == 1
    signer = CheckpointSigner(SEED)
    assert signer.verify(parse_line(lines[0]))
    assert CheckpointSigner(bytes(32)).verify(parse_line(lines[0])) is False

    assert audit.checkpoint(db) is None  # the head has not moved
    write(db, audit, clock, 1, start=5)
    second = audit.checkpoint(db)
    assert second is not None and second.seq == 5
    assert len(checkpoint_path.read_text().splitlines()) == 2
    loaded = audit.checkpoints.load() if audit.checkpoints else None
    assert loaded is not None and [c.seq for c in loaded.trusted] == [4, 5]
    assert not loaded.problems


def test_no_checkpoint_covers_an_uncommitted_record(
    db: Database, audit: AuditLog, clock: ManualClock
) -> None:
    """AUD-3: a checkpoint taken while a transaction has appended but not yet
    committed signs the committed head, never the pending one."""
    write(db, audit, clock, 2)
    with db.transaction() as conn:
        pending = audit.record(conn, actor="system:test", action="x.do", target="pending")
        assert pending.seq == 3
        cp = audit.checkpoint(db)  # reads a snapshot of what is committed
        assert cp is not None and cp.seq == 2
    assert audit.verify(db).ok


def test_checkpoints_are_written_when_due_and_only_if_the_head_moved(
    db: Database, audit: AuditLog, clock: ManualClock, checkpoint_path: Path
) -> None:
    """AUD-3: what the background loop does every interval."""
    interval = timedelta(seconds=60)
    assert audit.checkpoint_if_due(db, interval) is None  # empty chain
    write(db, audit, clock, 2)
    assert audit.checkpoint_if_due(db, interval) is not None
    write(db, audit, clock, 1, start=3)
    clock.advance(timedelta(seconds=30))
    assert audit.checkpoint_if_due(db, interval) is None  # not yet due
    clock.advance(timedelta(seconds=30))
    assert audit.checkpoint_if_due(db, interval) is not None
    clock.advance(timedelta(seconds=120))
    assert audit.checkpoint_if_due(db, interval) is None  # due, but nothing new
    assert len(checkpoint_path.read_text().splitlines()) == 2


def test_a_broken_chain_is_never_signed(
    db: Database, audit: AuditLog, clock: ManualClock, checkpoint_path: Path
) -> None:
    """AUD-3: checkpointing would otherwise launder tampering after the last checkpoint."""
    write(db, audit, clock, 3)
    assert audit.checkpoint(db) is not None
    write(db, audit, clock, 3, start=4)
    tamper(
        db,
        lambda conn: conn.execute(
            update(t.records).where(t.records.c.seq == 5).values(target="customer:cus_other")
        ),
    )
    before = checkpoint_path.read_text()
    with pytest.raises(errors.AuditChainBroken, match="seq 5"):
        audit.checkpoint(db)
    assert checkpoint_path.read_text() == before


def test_a_second_writer_finds_the_head_already_checkpointed(
    db: Database, audit: AuditLog, clock: ManualClock, checkpoint_path: Path
) -> None:
    """Several server processes checkpoint the same file: each re-reads its
    last line under the file lock, so a head is checkpointed once."""
    write(db, audit, clock, 3)
    other = new_log(clock, checkpoint_path)
    results = [audit.checkpoint(db), other.checkpoint(db)]
    assert [cp is not None for cp in results] == [True, False]
    assert len(checkpoint_path.read_text().splitlines()) == 1


# --- search and export (AUD-2) ------------------------------------------------------------


@pytest.fixture
def searchable(db: Database, audit: AuditLog, clock: ManualClock) -> AuditLog:
    """Seven records: two staff, two actions, Chinese and special characters in details."""
    entries = [
        ("staff:staff_li", "staff.login", "staff:staff_li", {"client": "柜台"}),
        ("staff:staff_li", "customer.update", "customer:cus_1", {"reason": "客户要求修改手机号"}),
        ("staff:staff_wang", "customer.update", "customer:cus_2", {"reason": "Address CHANGE"}),
        ("staff:staff_wang", "payment.approve", "payment:pay_1", {"note": "50% refund_ok"}),
        ("system:retention", "retention.purge", "record_class:customer", {"destroyed": 3}),
        ("staff:staff_li", "payment.approve", "payment:pay_2", {"note": "5x refund"}),
        ("staff:staff_wang", "staff.login", "staff:staff_wang", {"client": "网页"}),
    ]
    for actor, action, target, details in entries:
        db.run(
            lambda conn, a=actor, c=action, g=target, d=details: audit.record(
                conn, actor=a, action=c, target=g, details=d
            )
        )
        clock.advance(timedelta(hours=1))
    return audit


def found(audit: AuditLog, db: Database, **filters: Any) -> list[int]:
    with db.snapshot() as conn:
        return [r.seq for r in audit.search(conn, AuditQuery(**filters), limit=100).items]


def test_search_filters_by_actor_action_target_and_time(db: Database, searchable: AuditLog) -> None:
    """AUD-2: exact filters combine; time range is [since, until); newest first."""
    assert found(searchable, db) == [7, 6, 5, 4, 3, 2, 1]
    assert found(searchable, db, actor="staff:staff_li") == [6, 2, 1]
    assert found(searchable, db, action="customer.update") == [3, 2]
    assert found(searchable, db, target="payment:pay_1") == [4]
    assert found(searchable, db, actor="staff:staff_wang", action="staff.login") == [7]
    assert found(searchable, db, since=START + timedelta(hours=2)) == [7, 6, 5, 4, 3]
    assert found(
        searchable, db, since=START + timedelta(hours=2), until=START + timedelta(hours=4)
    ) == [4, 3]
    # The same instant given in Shanghai time selects the same records.
    assert found(searchable, db, since=(START + timedelta(hours=5)).astimezone(SHANGHAI)) == [7, 6]
    assert found(searchable, db, actor="staff:nobody") == []


def test_keyword_search_looks_into_actor_action_target_and_details(
    db: Database, searchable: AuditLog
) -> None:
    """AUD-2: a substring, any case, Chinese included; % and _ are plain characters."""
    assert found(searchable, db, keyword="手机号") == [2]
    assert found(searchable, db, keyword="address change") == [3]
    assert found(searchable, db, keyword="wang") == [7, 4, 3]
    assert found(searchable, db, keyword="purge") == [5]
    assert found(searchable, db, keyword="cus_2") == [3]
    assert found(searchable, db, keyword="50%") == [4]
    assert found(searchable, db, keyword="5%") == []
    assert found(searchable, db, keyword="_ok") == [4]
    assert found(searchable, db, keyword="login", actor="staff:staff_li") == [1]


def test_search_pages_newest_first_with_a_cursor(db: Database, searchable: AuditLog) -> None:
    """AUD-2: pages follow each other without gaps or repeats, also while new
    records arrive."""
    pages, cursor = [], None
    with db.snapshot() as conn:
        while True:
            page = searchable.search(conn, cursor=cursor, limit=3)
            pages.append([r.seq for r in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    with db.snapshot() as conn:
        first = searchable.search(conn, limit=2)
    db.run(lambda conn: searchable.record(conn, actor="system:t", action="x.new", target="t"))
    with db.snapshot() as conn:
        after = searchable.search(conn, cursor=first.next_cursor, limit=2)
    assert [r.seq for r in after.items] == [5, 4]


@pytest.mark.parametrize(
    ("query", "cursor", "limit"),
    [
        (AuditQuery(), "abc", 10),
        (AuditQuery(), "-1", 10),
        (AuditQuery(), None, 0),
        (AuditQuery(), None, 101),
        (AuditQuery(since=datetime(2026, 1, 2)), None, 10),  # naive: refused
        (AuditQuery(since=START, until=START), None, 10),
        (AuditQuery(keyword="x" * 201), None, 10),
    ],
)
def test_malformed_searches_are_refused(
    db: Database, searchable: AuditLog, query: AuditQuery, cursor: str | None, limit: int
) -> None:
    with db.snapshot() as conn, pytest.raises(errors.ValidationFailed):
        searchable.search(conn, query, cursor=cursor, limit=limit)


def test_export_is_a_csv_report_of_every_matching_record(
    db: Database, searchable: AuditLog
) -> None:
    """AUD-2: UTF-8 with BOM (Excel shows the Chinese), a header row, all
    matching records oldest first across batches, hashes included."""
    data = b"".join(searchable.export_csv(db, AuditQuery(actor="staff:staff_li"), batch=2))
    assert data.startswith(b"\xef\xbb\xbf")
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [row["seq"] for row in table] == ["1", "2", "6"]
    assert list(table[0]) == [
        "seq",
        "time",
        "actor",
        "action",
        "target",
        "outcome",
        "source_ip",
        "before_digest",
        "after_digest",
        "details",
        "algorithm",
        "prev_hash",
        "hash",
    ]
    assert table[1]["time"] == (START + timedelta(hours=1)).astimezone(SHANGHAI).isoformat(
        timespec="microseconds"
    )
    assert orjson.loads(table[1]["details"]) == {"reason": "客户要求修改手机号"}
    stored = {r["seq"]: r for r in rows(db)}
    assert table[2]["hash"] == stored[6]["hash"] and table[2]["prev_hash"] == stored[6]["prev_hash"]
    everything = b"".join(searchable.export_csv(db, batch=3)).decode("utf-8-sig")
    assert len(list(csv.DictReader(io.StringIO(everything)))) == 7
    nothing = b"".join(searchable.export_csv(db, AuditQuery(keyword="no such thing")))
    assert nothing.decode("utf-8-sig").splitlines() == [",".join(table[0])]


def test_export_cells_cannot_run_as_spreadsheet_formulas(db: Database, audit: AuditLog) -> None:
    """A target an attacker could influence is not executed when the report is opened."""
    db.run(
        lambda conn: audit.record(
            conn, actor="system:t", action="x.do", target='=HYPERLINK("http://evil")'
        )
    )
    text = b"".join(audit.export_csv(db)).decode("utf-8-sig")
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["target"] == '\'=HYPERLINK("http://evil")'


def test_a_record_is_found_by_its_seq(db: Database, searchable: AuditLog) -> None:
    with db.snapshot() as conn:
        assert searchable.get(conn, 3).target == "customer:cus_2"
        with pytest.raises(errors.AuditRecordNotFound):
            searchable.get(conn, 99)


def test_checkpoint_file_in_a_missing_directory_and_times_in_utc(
    db: Database, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "a" / "b" / "cp.jsonl"
    audit = AuditLog(clock, checkpoints=CheckpointFile(path, lambda: SEED))
    write(db, audit, clock, 1)
    clock.set(datetime(2026, 12, 1, 8, 30, tzinfo=SHANGHAI))
    cp = audit.checkpoint(db)
    assert cp is not None and cp.at == datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert '"at":"2026-12-01T00:30:00.000000Z"' in path.read_text()


def test_verify_reports_the_kind_of_break(
    db: Database, audit: AuditLog, clock: ManualClock
) -> None:
    """The report says what is wrong, not only where (the tamper tests go through
    every kind)."""
    write(db, audit, clock, 3)
    tamper(db, lambda conn: conn.execute(t.records.delete().where(t.records.c.seq == 2)))
    report = audit.verify(db)
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (2, BreakKind.MISSING)


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_chain(
    database_url: str, db: Database, audit: AuditLog, clock: ManualClock
) -> tuple[str, Path]:
    """Five records in a database of the test's own; the CLI's checkpoint file."""
    write(db, audit, clock, 5)
    return database_url, Path(database_url.removeprefix("sqlite:///")).with_name("cp.jsonl")


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def recorded(db: Database, action: str) -> list[dict[str, Any]]:
    return [r for r in rows(db) if r["action"] == action]


@sqlite_only
def test_cli_verify_exits_0_when_intact_and_1_naming_the_first_broken_record(
    cli_chain: tuple[str, Path], db: Database, tmp_path: Path
) -> None:
    """AUD-3: ``tongbao audit verify`` for scripts and cron: the exit status says
    whether the log is intact, the message which record broke and how."""
    url, checkpoints = cli_chain
    result = cli(url, checkpoints, "audit", "verify", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "audit log OK: 5 records" in result.stdout
    (use,) = recorded(db, "audit.verify")
    assert use["actor"].startswith("cli:") and use["outcome"] == "ok"

    tamper(
        db,
        lambda conn: conn.execute(update(t.records).where(t.records.c.seq == 3).values(target="x")),
    )
    result = cli(url, checkpoints, "audit", "verify", cwd=tmp_path)
    assert result.exit_code == 1
    assert "first broken record seq 3 (modified)" in result.stderr
    assert [r["outcome"] for r in recorded(db, "audit.verify")] == ["ok", "failed"]


@sqlite_only
def test_cli_search_filters_and_records_the_search(
    cli_chain: tuple[str, Path], db: Database, tmp_path: Path
) -> None:
    """AUD-2/AUD-4: keyword and time filters (local time = Asia/Shanghai); the
    search itself is recorded with its filters."""
    url, checkpoints = cli_chain
    result = cli(url, checkpoints, "audit", "search", "--keyword", "第3条", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["seq", "time", "actor", "action"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["3"]
    assert lines[1].split("\t")[1] == "2026-11-23T10:00:02+08:00"

    window = cli(
        url, checkpoints, "audit", "search",
        "--since", "2026-11-23T10:00:03", "--until", "2026-11-23T02:00:05Z", cwd=tmp_path,
    )  # fmt: skip
    assert [line.split("\t")[0] for line in window.stdout.splitlines()[1:]] == ["5", "4"]
    (search, _) = recorded(db, "audit.search")
    assert orjson.loads(search["details"])["filters"] == {"keyword": "第3条"}

    bad = cli(url, checkpoints, "audit", "search", "--since", "yesterday", cwd=tmp_path)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: validation_failed: --since 'yesterday'")


@sqlite_only
def test_cli_export_writes_the_csv_report(
    cli_chain: tuple[str, Path], db: Database, tmp_path: Path
) -> None:
    """AUD-2: ``tongbao audit export --out``: a CSV file Excel opens in Chinese."""
    url, checkpoints = cli_chain
    out = tmp_path / "report.csv"
    result = cli(
        url,
        checkpoints,
        "audit",
        "export",
        "--out",
        str(out),
        "--actor",
        "staff:staff_1",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert "exported 2 records" in result.stdout
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [(row["seq"], row["actor"]) for row in table] == [
        ("1", "staff:staff_1"),
        ("4", "staff:staff_1"),
    ]
    assert "第4条" in table[1]["details"]
    (export,) = recorded(db, "audit.export")
    assert orjson.loads(export["details"])["records"] == 2


@sqlite_only
def test_cli_checkpoint_signs_the_head(
    cli_chain: tuple[str, Path], db: Database, tmp_path: Path
) -> None:
    """AUD-3: ``tongbao audit checkpoint`` signs with the key derived from the
    master key; ``verify`` then checks against it."""
    url, checkpoints = cli_chain
    result = cli(url, checkpoints, "audit", "checkpoint", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("checkpoint seq 5 hash ")
    assert len(checkpoints.read_text().splitlines()) == 1
    again = cli(url, checkpoints, "audit", "checkpoint", cwd=tmp_path)
    assert "nothing to checkpoint" in again.stdout
    assert cli(url, checkpoints, "audit", "verify", cwd=tmp_path).exit_code == 0
    tamper(db, lambda conn: conn.execute(t.records.delete().where(t.records.c.seq >= 4)))
    with db.transaction() as conn:
        conn.execute(update(t.chain_head).values(seq=3, hash=rows(db)[-1]["hash"]))
    result = cli(url, checkpoints, "audit", "verify", cwd=tmp_path)
    assert result.exit_code == 1
    assert "first broken record seq 4 (truncated)" in result.stderr


# --- the platform's audit log ---------------------------------------------------------------


def test_the_platform_checkpoints_the_chain_in_its_background_duties(
    platform: Platform, clock: ManualClock
) -> None:
    """AUD-3: ``tick`` signs the head every TONGBAO_AUDIT_CHECKPOINT_INTERVAL_SECONDS
    once it moved, with the key derived from the master key."""
    path = platform.settings.audit_checkpoint_file
    interval = timedelta(seconds=platform.settings.audit_checkpoint_interval_seconds)

    def append(target: str) -> None:
        platform.db.run(
            lambda conn: platform.audit.record(
                conn, actor="system:test", action="x.do", target=target
            )
        )

    append("t")
    assert platform.tick()["audit_checkpoints"] == 1
    append("u")
    assert platform.tick()["audit_checkpoints"] == 0  # the head moved, but it is not due
    clock.advance(interval)
    assert platform.tick()["audit_checkpoints"] == 1
    clock.advance(interval)
    assert platform.tick()["audit_checkpoints"] == 0  # due, but the head has not moved
    loaded = CheckpointFile(path, platform.keyring.derive_key(SIGNING_PURPOSE)).load()
    assert not loaded.problems
    head = platform.db.read(platform.audit.head)
    assert head is not None and loaded.trusted[-1].point.seq == head.seq
    assert platform.audit.verify(platform.db).checkpoints == 2


def test_the_platform_masks_personal_data_that_slips_into_details(platform: Platform) -> None:
    """DATA-2: phone, ID and card numbers in ``details`` are masked on the way in."""
    record = platform.db.run(
        lambda conn: platform.audit.record(
            conn,
            actor="system:test",
            action="x.do",
            target="t",
            details={"note": "called 13800138000 about card 6222021234567890128"},
        )
    )
    assert "13800138000" not in record.details
    assert "6222021234567890128" not in record.details
    assert "0128" in record.details and "138" in record.details
