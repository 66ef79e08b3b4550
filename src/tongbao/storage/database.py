"""Connections, transactions and the retry loop every money transaction runs in.

Concurrency scheme (details in ``docs/invariants.md``):

* PostgreSQL runs at READ COMMITTED. Balance changes are single conditional
  ``UPDATE … WHERE <constraint still holds> RETURNING`` statements, issued in
  ascending account-id order. The row lock taken by the UPDATE serialises
  writers of one account, and PostgreSQL re-evaluates the WHERE clause on the
  newest row version after waiting, so a concurrent debit can neither be lost
  nor overdraw the account. Deadlocks (40P01) and serialization failures
  (40001) are retried with jittered back-off.
* SQLite allows one writer at a time; write transactions start with
  ``BEGIN IMMEDIATE`` so the write lock is taken up front (no lock upgrade
  deadlocks) and ``SQLITE_BUSY`` is retried.

Everything a retried function does must be inside the database: no bank
calls, no notifications sent, no in-memory state changed, because the
function may run more than once.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tongbao.config import Settings

T = TypeVar("T")
log = structlog.get_logger(__name__)

_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception, whether SQLAlchemy wrapped it or not
    (hot-path statements run on the raw cursor, see :mod:`.prepared`)."""
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


class RetryTransactionError(Exception):
    """Raised inside a transaction to have :meth:`Database.run` roll it back and
    run it again (e.g. a randomly drawn unique value collided)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed transaction can safely be run again from the start."""
    if isinstance(exc, RetryTransactionError):
        return True
    orig = _driver_error(exc)
    if getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "database is locked" in message or "database is busy" in message
    return False


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a unique/primary-key violation (SQLSTATE 23505 or SQLite's)."""
    orig = _driver_error(exc)
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    return isinstance(orig, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(orig)


class Database:
    """One database: engine, transactions and the retry loop."""

    def __init__(self, url: str, *, settings: Settings | None = None, echo: bool = False) -> None:
        self.settings = settings or Settings(database_url=url)
        self.url = make_url(url)
        self.max_retries = self.settings.db_max_retries
        if self.url.get_backend_name() == "sqlite":
            self.engine = self._sqlite_engine(echo)
            self.read_engine = self.engine
        else:
            # Reads get their own autocommit pool: at READ COMMITTED a read
            # transaction adds two round trips and no consistency, and switching
            # a pooled connection's mode on every checkout costs a round trip too.
            self.read_engine = create_engine(
                self.url,
                echo=echo,
                pool_size=self.settings.db_pool_size,
                max_overflow=self.settings.db_pool_size,
                pool_recycle=1800,
                isolation_level="AUTOCOMMIT",
            )
            self.engine = create_engine(
                self.url,
                echo=echo,
                pool_size=self.settings.db_pool_size,
                max_overflow=self.settings.db_pool_size,
                # No pre-ping: it costs a round trip per transaction; connections
                # are recycled instead, and a dead one fails its first statement.
                pool_recycle=1800,
                isolation_level="READ COMMITTED",
            )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def _sqlite_engine(self, echo: bool) -> Engine:
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            self.url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=self.settings.db_pool_size,
            max_overflow=self.settings.db_pool_size,
        )
        synchronous = self.settings.sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN is ours.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on any exception."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """For reading: a deferred transaction on SQLite (no write lock, one
        consistent snapshot); autocommit on PostgreSQL (see ``read_engine``)."""
        with self.read_engine.connect() as raw:
            conn = (
                raw.execution_options(sqlite_begin="DEFERRED") if self.dialect == "sqlite" else raw
            )
            with conn.begin():
                yield conn

    def run(self, fn: Callable[[Connection], T], *, what: str = "transaction") -> T:
        """Run ``fn`` in a write transaction, retrying retryable failures.

        ``fn`` may run more than once; see the module docstring.
        """
        attempt = 0
        while True:
            try:
                with self.transaction() as conn:
                    return fn(conn)
            except Exception as exc:
                if not is_retryable(exc) or attempt >= self.max_retries:
                    raise
                attempt += 1
                delay = min(0.2, 0.002 * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
                log.debug("transaction_retry", what=what, attempt=attempt, error=str(exc))
                time.sleep(delay)

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a read-only snapshot."""
        with self.snapshot() as conn:
            return fn(conn)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
