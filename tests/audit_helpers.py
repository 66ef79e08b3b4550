"""Helpers shared by the audit-log tests: a log with its own checkpoint file,
records written through the service, and tampering the way a database
administrator could (straight SQL, with the append-only triggers switched off)."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, select
from typer.testing import CliRunner, Result

from tongbao.audit import AuditLog, AuditRecord, CheckpointFile
from tongbao.audit import tables as t
from tongbao.cli import app as cli_app
from tongbao.clock import ManualClock
from tongbao.storage import Database

SEED = bytes(range(32))
"""The checkpoint signing seed of the tests (production derives it from the master key)."""


def new_log(
    clock: ManualClock, path: Path, *, algorithm: str = "SHA-256", seed: bytes = SEED
) -> AuditLog:
    return AuditLog(clock, algorithm=algorithm, checkpoints=CheckpointFile(path, seed))


def write(
    db: Database, audit: AuditLog, clock: ManualClock, count: int, *, start: int = 1
) -> list[AuditRecord]:
    """``count`` records, one transaction each, a second apart."""
    written = []
    for n in range(start, start + count):
        written.append(
            db.run(
                lambda conn, n=n: audit.record(
                    conn,
                    actor=f"staff:staff_{n % 3}",
                    action="customer.update" if n % 2 else "payment.approve",
                    target=f"customer:cus_{n}",
                    source_ip="10.0.0.7",
                    before={"phone": "13800138000", "n": n},
                    after={"phone": "13900139000", "n": n},
                    details={"n": n, "note": f"第{n}条"},
                )
            )
        )
        clock.advance(timedelta(seconds=1))
    return written


def rows(db: Database) -> list[dict[str, Any]]:
    with db.snapshot() as conn:
        found = conn.execute(select(t.records).order_by(t.records.c.seq)).mappings()
        return [dict(row) for row in found]


@contextmanager
def tampering(db: Database) -> Iterator[Connection]:
    """A transaction with the append-only triggers out of the way, as a DBA
    (or an attacker with owner rights) would do it. On PostgreSQL the triggers
    are disabled inside the transaction and enabled again before it commits,
    so the shared test database keeps them; SQLite's file is the test's own."""
    with db.engine.connect() as conn, conn.begin():
        if db.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_records DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_append_only_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_append_only_delete")
        yield conn
        if db.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_records ENABLE TRIGGER USER")


def tamper(db: Database, change: Callable[[Connection], object]) -> None:
    with tampering(db) as conn:
        change(conn)


# --- the command line -------------------------------------------------------------------------

MASTER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
RUNNER = CliRunner()


def cli(url: str, checkpoints: Path, *args: str, cwd: Path) -> Result:
    """``tongbao *args`` in-process on ``url``: only the database, the checkpoint
    file and a master key from the environment; logging set-up put back after."""
    env: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith("TONGBAO_") and not name.startswith("TONGBAO_TEST_")
    }
    env.update(
        TONGBAO_DATABASE_URL=url,
        TONGBAO_ENV="development",
        TONGBAO_AUDIT_CHECKPOINT_FILE=str(checkpoints),
        TONGBAO_MASTER_KEY=MASTER_KEY,
        COLUMNS="250",
    )
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        with contextlib.chdir(cwd):
            return RUNNER.invoke(cli_app, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
