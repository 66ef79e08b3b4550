"""The key ring over time: rotation, re-encryption (also killed part-way and
with writers running), retiring key versions, crypto-shredding, and the
``tongbao keys`` commands (SEC-1, SEC-12, AUD-6)."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from tests.conftest import TEST_MASTER_KEY
from tests.reencrypt_worker import COLUMNS, NOTES
from tongbao import cli, errors
from tongbao.clock import ManualClock
from tongbao.config import Settings
from tongbao.security import EncryptedColumn, KeyRing
from tongbao.security import tables as kt
from tongbao.security.algorithms import SM4_GCM, is_ciphertext, parse_ciphertext
from tongbao.storage import Database

WORKER = Path(__file__).with_name("reencrypt_worker.py")
notes = sa.table(NOTES, sa.column("owner"), sa.column("id"), sa.column("title"), sa.column("body"))
Note = tuple[str, str]  # (owner, id)


def make_ring(settings: Settings, db: Database, clock: ManualClock, **changes: object) -> KeyRing:
    ring = KeyRing.from_settings(settings.model_copy(update=changes), clock)
    db.run(ring.initialize)
    return ring


@pytest.fixture
def ring(settings: Settings, db: Database, clock: ManualClock) -> KeyRing:
    return make_ring(settings, db, clock)


@pytest.fixture
def notes_table(db: Database) -> Iterator[None]:
    """A table of the test's own with two encrypted columns (it is not part of
    the schema, so it is dropped again)."""
    with db.transaction() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {NOTES}")
        conn.exec_driver_sql(
            f"CREATE TABLE {NOTES} (owner VARCHAR(40) NOT NULL, id VARCHAR(40) NOT NULL, "
            "title TEXT, body TEXT, PRIMARY KEY (owner, id))"
        )
    yield
    with db.transaction() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {NOTES}")


def write(
    db: Database,
    ring: KeyRing,
    owner: str,
    note_id: str,
    title: str | None,
    body: str | None,
    *,
    clear: bool = False,
) -> None:
    """Insert or replace a note, encrypted under the owner's data key (or in clear)."""

    def run(conn: sa.Connection) -> None:
        def seal(field: str, value: str | None) -> str | None:
            if clear or value is None:
                return value
            return ring.encrypt(
                conn,
                subject=f"customer:{owner}",
                record_class="customer",
                field=field,
                plaintext=value,
            )

        row = {"title": seal("notes.title", title), "body": seal("notes.body", body)}
        updated = conn.execute(
            sa.update(notes).where(notes.c.owner == owner, notes.c.id == note_id).values(row)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(notes).values(owner=owner, id=note_id, **row))

    db.run(run)


def stored(db: Database) -> dict[Note, tuple[str | None, str | None]]:
    with db.snapshot() as conn:
        return {
            (r.owner, r.id): (r.title, r.body)
            for r in conn.execute(sa.select(notes).order_by(notes.c.owner, notes.c.id))
        }


def read_all(db: Database, ring: KeyRing) -> dict[Note, tuple[str | None, str | None]]:
    """Every note decrypted (each value must be a ciphertext of its own owner)."""
    result = {}
    with db.snapshot() as conn:
        for (owner, note_id), values in stored(db).items():
            opened = []
            for field, value in zip(("notes.title", "notes.body"), values, strict=True):
                if value is None:
                    opened.append(None)
                    continue
                assert is_ciphertext(value), f"{owner}/{note_id} {field} is in clear"
                opened.append(ring.decrypt(conn, value, field=field, subject=f"customer:{owner}"))
            result[(owner, note_id)] = (opened[0], opened[1])
    return result


def versions_by_owner(db: Database) -> dict[str, set[int]]:
    """The key versions each owner's values are sealed under."""
    dk = kt.data_keys
    with db.snapshot() as conn:
        version_of = {r[0]: r[1] for r in conn.execute(sa.select(dk.c.dek_id, dk.c.kek_version))}
    found: dict[str, set[int]] = {}
    for (owner, _), values in stored(db).items():
        for value in values:
            if value is not None:
                found.setdefault(owner, set()).add(version_of[parse_ciphertext(value).dek_id])
    return found


def data_keys_by_version(db: Database) -> dict[int, int]:
    dk = kt.data_keys
    with db.snapshot() as conn:
        rows = conn.execute(
            sa.select(dk.c.kek_version, sa.func.count())
            .where(dk.c.shredded_at.is_(None))
            .group_by(dk.c.kek_version)
        )
        return {r[0]: r[1] for r in rows}


def seed(
    db: Database, ring: KeyRing, owners: int, *, notes_each: int = 2
) -> dict[Note, tuple[str | None, str | None]]:
    expected: dict[Note, tuple[str | None, str | None]] = {}
    for i in range(owners):
        owner = f"cus_{i:03d}"
        for n in range(notes_each):
            title = None if (i + n) % 5 == 0 else f"标题 {i}-{n}"
            body = f"身份证 1101011990030712{i % 10}{n} 张{i}"
            write(db, ring, owner, f"n{n}", title, body)
            expected[(owner, f"n{n}")] = (title, body)
    return expected


# --- rotation and re-encryption ----------------------------------------------------------


@pytest.mark.usefixtures("notes_table")
def test_rotate_new_writes_use_the_new_version_old_values_still_decrypt(
    db: Database, ring: KeyRing
) -> None:
    """SEC-1 key rotation: after `keys rotate` new data keys are wrapped under
    the new version (also for a subject that already had one); old values
    still decrypt."""
    expected = seed(db, ring, 3)
    assert db.run(ring.rotate) == 2
    assert db.read(ring.current_version) == 2
    write(db, ring, "cus_000", "n9", "new", "new body")
    write(db, ring, "cus_new", "n0", "新", "新的")
    expected |= {("cus_000", "n9"): ("new", "new body"), ("cus_new", "n0"): ("新", "新的")}
    assert read_all(db, ring) == expected
    by_owner = versions_by_owner(db)
    assert by_owner["cus_000"] == {1, 2}
    assert by_owner["cus_001"] == {1} and by_owner["cus_new"] == {2}
    status = db.read(ring.status)
    assert [(v.version, v.data_keys) for v in status.versions] == [(1, 3), (2, 2)]
    assert status.data_keys_outside_current == 3


@pytest.mark.usefixtures("notes_table")
def test_reencrypt_moves_everything_is_idempotent_and_lets_the_old_version_go(
    db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """SEC-1: re-encryption moves every subject to a fresh data key under the
    current version, encrypts values left in clear (legacy rows), deletes the
    old data keys; a second run changes nothing; then the old version can be
    retired and everything still decrypts."""
    expected = seed(db, ring, 7)
    for i in range(3):  # rows written before the columns were encrypted
        write(db, ring, f"cus_legacy{i}", "n0", f"旧 {i}", f"明文 {i}", clear=True)
        expected[(f"cus_legacy{i}", "n0")] = (f"旧 {i}", f"明文 {i}")
    old_stored = stored(db)
    db.run(ring.rotate)
    seen: list[tuple[int, int]] = []
    report = ring.reencrypt(db, COLUMNS, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert (report.subjects, report.encrypted, report.keys_deleted) == (10, 6, 7)
    assert report.reencrypted == sum(v is not None for k in old_stored for v in old_stored[k]) - 6
    assert report.complete and report.batches >= 4 and not report.failures
    assert seen[-1][0] == seen[-1][1] == 10 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    fresh = make_ring(settings, db, clock)
    assert read_all(db, fresh) == expected
    assert all(v == {2} for v in versions_by_owner(db).values())
    assert data_keys_by_version(db) == {2: 10}
    assert all(stored(db)[k] != v for k, v in old_stored.items())

    after_first = stored(db)
    again = ring.reencrypt(db, COLUMNS, batch_size=3)
    assert (again.subjects, again.reencrypted, again.encrypted, again.keys_deleted) == (0, 0, 0, 0)
    assert stored(db) == after_first

    db.run(lambda conn: ring.retire(conn, 1))
    status = db.read(ring.status)
    assert [(v.version, v.status) for v in status.versions] == [(1, "retired"), (2, "active")]
    with db.snapshot() as conn:
        kv = kt.key_versions
        assert conn.execute(sa.select(kv.c.wrapped_key).where(kv.c.version == 1)).scalar() is None
    assert read_all(db, make_ring(settings, db, clock)) == expected


@pytest.mark.usefixtures("notes_table")
def test_retire_is_refused_while_the_version_is_current_or_in_use(
    db: Database, ring: KeyRing
) -> None:
    """SEC-1: a key version is destroyed only when nothing depends on it."""
    seed(db, ring, 2)
    with pytest.raises(errors.KeyVersionInUse):
        db.run(lambda conn: ring.retire(conn, 1))  # current
    db.run(ring.rotate)
    with pytest.raises(errors.KeyVersionInUse) as refused:
        db.run(lambda conn: ring.retire(conn, 1))
    assert "2 data keys" in refused.value.detail and "keys reencrypt" in refused.value.detail
    with pytest.raises(errors.KeyVersionUnknown):
        db.run(lambda conn: ring.retire(conn, 7))
    assert [v.status for v in db.read(ring.status).versions] == ["active", "active"]
    ring.reencrypt(db, COLUMNS, batch_size=10)
    db.run(lambda conn: ring.retire(conn, 1))
    db.run(lambda conn: ring.retire(conn, 1))  # already retired: nothing more to do
    assert [v.status for v in db.read(ring.status).versions] == ["retired", "active"]


@pytest.mark.usefixtures("notes_table")
def test_switching_the_cipher_takes_effect_at_start_up(
    db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """SEC-12: TONGBAO_FIELD_CIPHER=SM4-GCM at the next start makes an SM4 key
    version current; re-encryption moves the AES data to SM4 data keys."""
    expected = seed(db, ring, 3)
    sm4 = make_ring(settings, db, clock, field_cipher=SM4_GCM)
    assert [(v.version, v.cipher) for v in db.read(sm4.status).versions] == [
        (1, "AES-256-GCM"),
        (2, SM4_GCM),
    ]
    make_ring(settings, db, clock, field_cipher=SM4_GCM)  # a second start: no new version
    assert db.read(sm4.current_version) == 2
    assert sm4.reencrypt(db, COLUMNS, batch_size=2).complete
    with db.snapshot() as conn:
        ciphers = set(conn.execute(sa.select(kt.data_keys.c.cipher)).scalars())
    assert ciphers == {SM4_GCM}
    assert read_all(db, sm4) == expected


@pytest.mark.usefixtures("notes_table")
def test_reencrypt_reports_values_it_cannot_open_and_keeps_their_key(
    db: Database, ring: KeyRing
) -> None:
    expected = seed(db, ring, 3)
    _, body = stored(db)[("cus_001", "n0")]
    assert body is not None
    broken = body[:-6] + ("AAAAAA" if not body.endswith("AAAAAA") else "BBBBBB")
    with db.transaction() as conn:
        conn.execute(
            sa.update(notes)
            .where(notes.c.owner == "cus_001", notes.c.id == "n0")
            .values(body=broken)
        )
    db.run(ring.rotate)
    report = ring.reencrypt(db, COLUMNS, batch_size=10)
    assert not report.complete and report.keys_kept == 1 and report.keys_deleted == 2
    assert [(f.table, f.column, f.row, f.code) for f in report.failures] == [
        (NOTES, "body", "cus_001/n0", "decryption_failed")
    ]
    assert stored(db)[("cus_001", "n0")][1] == broken  # left as it was
    with pytest.raises(errors.KeyVersionInUse):
        db.run(lambda conn: ring.retire(conn, 1))
    with db.snapshot() as conn:  # the readable value of that subject was moved all the same
        assert (
            ring.decrypt(conn, stored(db)[("cus_001", "n1")][1] or "", field="notes.body")
            == (expected[("cus_001", "n1")][1])
        )


@pytest.mark.usefixtures("notes_table")
def test_reencrypt_leaves_data_keys_of_unregistered_record_classes_alone(
    db: Database, ring: KeyRing
) -> None:
    """Nobody can say whether such a key is still used, so it is never deleted."""
    seed(db, ring, 1)
    merchant = db.run(
        lambda conn: ring.encrypt(
            conn, subject="merchant:m1", record_class="merchant", field="m.name", plaintext="店"
        )
    )
    db.run(ring.rotate)
    report = ring.reencrypt(db, COLUMNS, batch_size=10)
    assert report.unregistered_keys == 1 and not report.complete
    assert db.read(lambda conn: ring.decrypt(conn, merchant, field="m.name")) == "店"
    with pytest.raises(errors.KeyVersionInUse):
        db.run(lambda conn: ring.retire(conn, 1))


def test_reencrypt_refuses_a_column_the_database_does_not_have(db: Database, ring: KeyRing) -> None:
    bogus = EncryptedColumn("no_such_table", "x", "id", "customer", "no.x")
    with pytest.raises(errors.ConfigurationError):
        ring.reencrypt(db, [bogus], batch_size=10)


@pytest.mark.slow
@pytest.mark.usefixtures("notes_table")
def test_reencrypt_killed_part_way_leaves_no_subject_half_done_and_resumes(
    db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """SEC-1: a re-encryption killed with SIGKILL mid-run leaves every subject
    either untouched or finished — every value still decrypts — and a re-run
    completes the job."""
    expected = seed(db, ring, 60)
    db.run(ring.rotate)
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(WORKER), settings.database_url, TEST_MASTER_KEY, "3", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    batches = 0
    for line in child.stdout:
        assert not line.startswith("FINISHED"), "the child must die part-way"
        if line.startswith("BATCH"):
            batches += 1
            if batches == 4:
                time.sleep(random.uniform(0, 0.02))  # within a later batch's transaction, often
                child.send_signal(signal.SIGKILL)
                break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    by_owner = versions_by_owner(db)
    assert all(len(v) == 1 for v in by_owner.values()), "a subject is half re-encrypted"
    moved = sum(v == {2} for v in by_owner.values())
    assert 12 <= moved < 60
    fresh = make_ring(settings, db, clock)
    assert read_all(db, fresh) == expected

    report = fresh.reencrypt(db, COLUMNS, batch_size=7)
    assert report.complete and report.subjects == 60 - moved
    assert all(v == {2} for v in versions_by_owner(db).values())
    assert data_keys_by_version(db) == {2: 60}
    db.run(lambda conn: fresh.retire(conn, 1))
    assert read_all(db, make_ring(settings, db, clock)) == expected


@pytest.mark.slow
@pytest.mark.usefixtures("notes_table")
def test_reencrypt_while_the_service_keeps_writing(
    db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """SEC-1: rotation and re-encryption run while another process writes;
    no value is lost or left under a key that was deleted, and a second run
    catches whatever was written under the old key meanwhile."""
    expected = seed(db, ring, 24, notes_each=1)
    writer_ring = make_ring(settings, db, clock)  # another process: its own key cache
    stop = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(7)
        i = 0
        while not stop.is_set():
            owner = f"cus_{rng.randrange(24):03d}"
            text = f"更新 {i}"
            try:
                with lock:
                    write(db, writer_ring, owner, "n0", None, text)
                    expected[(owner, "n0")] = (None, text)
            except BaseException as exc:
                failures.append(exc)
                return
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        db.run(ring.rotate)
        first = ring.reencrypt(db, COLUMNS, batch_size=2)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures
    assert first.subjects > 0 and not first.failures
    runs = 1
    while not ring.reencrypt(db, COLUMNS, batch_size=5).complete or data_keys_by_version(db).get(1):
        runs += 1
        assert runs < 5
    assert read_all(db, make_ring(settings, db, clock)) == expected
    assert all(v == {2} for v in versions_by_owner(db).values())
    db.run(lambda conn: ring.retire(conn, 1))
    assert read_all(db, make_ring(settings, db, clock)) == expected


@pytest.mark.usefixtures("notes_table")
def test_reencrypt_waits_for_a_writer_still_using_an_old_data_key(
    backend: str, db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """SEC-1: the exact race — a writer picked the subject's data key before the
    rotation and commits its value after re-encryption reached the subject.
    Re-encryption waits for it, then moves that value too; the old key is
    never deleted under it."""
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: this interleaving cannot happen")
    seed(db, ring, 1, notes_each=1)
    writer_ring = make_ring(settings, db, clock)
    with db.transaction() as writer:
        late = writer_ring.encrypt(
            writer,
            subject="customer:cus_000",
            record_class="customer",
            field="notes.body",
            plaintext="写于轮换之前",
        )
        db.run(ring.rotate)
        reports = []
        job = threading.Thread(
            target=lambda: reports.append(ring.reencrypt(db, COLUMNS, batch_size=10))
        )
        job.start()
        time.sleep(0.5)
        assert job.is_alive(), "re-encryption must wait for the writer"
        writer.execute(
            sa.update(notes).where(notes.c.owner == "cus_000", notes.c.id == "n0").values(body=late)
        )
    job.join(timeout=30)
    assert reports and reports[0].complete
    assert read_all(db, make_ring(settings, db, clock))[("cus_000", "n0")][1] == "写于轮换之前"
    assert versions_by_owner(db) == {"cus_000": {2}}
    db.run(lambda conn: ring.retire(conn, 1))


# --- crypto-shredding (AUD-6) ---------------------------------------------------------------


@pytest.mark.usefixtures("notes_table")
def test_shredding_destroys_one_subjects_data_and_nothing_else(
    db: Database, ring: KeyRing, settings: Settings, clock: ManualClock
) -> None:
    """AUD-6: after shredding, the subject's values cannot be decrypted by
    anyone (this process, another one, a copy of the table), nothing more is
    written for it, and the other subjects are unaffected."""
    expected = seed(db, ring, 3)
    gone = stored(db)[("cus_001", "n0")][1]
    assert gone is not None
    db.run(ring.rotate)
    write(db, ring, "cus_001", "n5", "after rotation", "two keys now")  # a second data key
    assert db.run(lambda conn: ring.shred(conn, "customer:cus_001")) == 2
    assert db.run(lambda conn: ring.shred(conn, "customer:cus_001")) == 0
    for reader in (ring, make_ring(settings, db, clock)):
        with pytest.raises(errors.DataShredded):
            db.read(lambda conn, r=reader: r.decrypt(conn, gone, field="notes.body"))
    with pytest.raises(errors.DataShredded):
        write(db, ring, "cus_001", "n6", None, "new data after the end")
    with db.snapshot() as conn:
        dk = kt.data_keys
        keys = conn.execute(
            sa.select(dk.c.wrapped_key, dk.c.shredded_at).where(dk.c.subject == "customer:cus_001")
        ).all()
    assert [k.wrapped_key for k in keys] == [None, None]
    assert all(k.shredded_at == clock.now() for k in keys)
    others = {k: v for k, v in expected.items() if k[0] != "cus_001"}
    with db.snapshot() as conn:  # the others still open
        for (owner, note_id), (_, body) in others.items():
            value = stored(db)[(owner, note_id)][1]
            assert value is not None
            assert ring.decrypt(conn, value, field="notes.body") == body
    report = ring.reencrypt(db, COLUMNS, batch_size=10)  # shredded subjects are skipped
    assert report.complete and report.keys_deleted == 2


def test_a_shred_elsewhere_reaches_this_process_within_its_cache_time(
    db: Database, settings: Settings, clock: ManualClock
) -> None:
    """AUD-6 across processes: a cached key stops working once its time is up."""
    reader = KeyRing.from_settings(settings, clock, cache_seconds=0.3)
    db.run(reader.initialize)
    other = make_ring(settings, db, clock)
    ciphertext = db.run(
        lambda conn: other.encrypt(
            conn, subject="customer:cus_1", record_class="customer", field="f", plaintext="张三"
        )
    )
    assert db.read(lambda conn: reader.decrypt(conn, ciphertext, field="f")) == "张三"
    db.run(lambda conn: other.shred(conn, "customer:cus_1"))
    time.sleep(0.35)
    with pytest.raises(errors.DataShredded):
        db.read(lambda conn: reader.decrypt(conn, ciphertext, field="f"))


# --- the command line ---------------------------------------------------------------------------


def keys(url: str, key_file: Path, *args: str) -> Result:
    """``tongbao keys *args`` in-process, with only these settings (and no stray .env)."""
    workdir = key_file.parent.parent
    env: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith("TONGBAO_") and not name.startswith("TONGBAO_TEST_")
    }
    env.update(
        TONGBAO_DATABASE_URL=url,
        TONGBAO_MASTER_KEY_FILE=str(key_file),
        TONGBAO_ENV="test",
        TONGBAO_AUDIT_CHECKPOINT_FILE=str(workdir / "checkpoints.jsonl"),
        COLUMNS="250",
    )
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.chdir(workdir):
            return CliRunner().invoke(cli.app, ["keys", *args], env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_keys_commands(database_url: str, tmp_path: Path) -> None:
    """SEC-1: the key custodian's commands — init (private file, never
    overwritten), status, rotate, reencrypt, retire — and their refusals."""
    key_file = tmp_path / "secret" / "master.key"
    status = keys(database_url, key_file, "status")
    assert status.exit_code == 1 and "error: master_key_missing" in status.stderr

    made = keys(database_url, key_file, "init")
    assert made.exit_code == 0, made.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32
    content = key_file.read_text()
    again = keys(database_url, key_file, "init")
    assert again.exit_code == 1 and "configuration_error" in again.stderr
    assert keys(database_url, key_file, "init", "--if-missing").exit_code == 0
    assert key_file.read_text() == content

    status = keys(database_url, key_file, "status")
    assert status.exit_code == 0, status.output
    assert "current key version 1" in status.stdout

    rotated = keys(database_url, key_file, "rotate")
    assert rotated.exit_code == 0 and "key version 2 is current" in rotated.stdout
    refused = keys(database_url, key_file, "retire", "2")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: key_version_in_use:")
    moved = keys(database_url, key_file, "reencrypt", "--batch-size", "5")
    assert moved.exit_code == 0, moved.output
    assert "subjects in" in moved.stdout
    retired = keys(database_url, key_file, "retire", "1")
    assert retired.exit_code == 0, retired.output
    lines = keys(database_url, key_file, "status").stdout.splitlines()
    assert any(line.startswith("1\t") and "\tretired\t" in line for line in lines)
    assert any(line.startswith("2 (current)\t") for line in lines)


def test_stored_master_key_fingerprint_names_a_swapped_key_file(
    database_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "master.key"
    assert keys(database_url, key_file, "init").exit_code == 0
    assert keys(database_url, key_file, "status").exit_code == 0
    key_file.unlink()
    assert keys(database_url, key_file, "init").exit_code == 0  # a different key
    status = keys(database_url, key_file, "status")
    assert status.exit_code == 1
    assert status.stderr.startswith("error: master_key_invalid: the key ring was made with")


def test_clock_is_used_for_key_times(db: Database, ring: KeyRing, clock: ManualClock) -> None:
    clock.advance(timedelta(days=3))
    db.run(ring.rotate)
    versions = db.read(ring.status).versions
    assert versions[1].created_at - versions[0].created_at == timedelta(days=3)
