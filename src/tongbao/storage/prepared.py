"""Hot-path statements: Core statements compiled once, run on the driver cursor.

SQLAlchemy's per-execution bookkeeping costs about 100 µs, more than
PostgreSQL needs for a primary-key UPDATE, and a wallet transfer runs several
statements. The money path (balance updates, entry and posting inserts,
payment rows) therefore compiles its statements once per dialect and executes
them on the DBAPI cursor of the caller's SQLAlchemy connection, inside the
caller's transaction. Everything else uses plain SQLAlchemy.

Bound values must be plain: ``int``, ``str``, ``bool``, ``None`` or an aware
``datetime`` (converted here the way :class:`~tongbao.storage.types.UtcDateTime`
stores it). Expanding ``IN`` parameters are not supported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import Executable

from tongbao.storage.types import UtcDateTime

_DIALECTS: dict[str, Dialect] = {
    "postgresql": postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite.pysqlite.dialect(paramstyle="named"),
}


def sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Prepared:
    """A statement compiled once per dialect and run on the raw cursor."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._sql: dict[str, str] = {}
        self._selected: list[tuple[str, bool]] | None = None
        self._columns_of_insert: list[str] | None = None
        self._lock = threading.Lock()

    def sql(self, dialect_name: str) -> str:
        text = self._sql.get(dialect_name)
        if text is None:
            compiled = self.statement.compile(  # type: ignore[attr-defined]
                dialect=_DIALECTS[dialect_name]
            )
            text = str(compiled)
            with self._lock:
                self._sql[dialect_name] = text
        return text

    def _bind(self, dialect_name: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if dialect_name != "sqlite":
            return params
        return {
            key: sqlite_time(value) if isinstance(value, datetime) else value
            for key, value in params.items()
        }

    def run(self, conn: Connection, params: Mapping[str, Any], *, own_cursor: bool = False) -> Any:
        """Execute once; returns the DBAPI cursor (``fetchone``/``fetchall``/``rowcount``).

        ``own_cursor``: a fresh cursor, for results read after other statements
        (inside a :func:`pipeline`)."""
        name = conn.dialect.name
        cursor = (
            conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            if own_cursor
            else raw_cursor(conn)
        )
        cursor.execute(self.sql(name), self._bind(name, params))
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run a SELECT and return its first row by column name, instants as
        aware UTC datetimes on both engines (what :class:`UtcDateTime` gives)."""
        cursor = self.run(conn, params)
        row = cursor.fetchone()
        if conn.dialect.name == "sqlite":
            cursor.close()  # a fresh cursor there; closing finishes the statement
        if row is None:
            return None
        sqlite = conn.dialect.name == "sqlite"
        values = {}
        for (name, is_instant), value in zip(self._columns(), row, strict=True):
            if is_instant and value is not None:
                values[name] = (
                    datetime.fromisoformat(value).replace(tzinfo=UTC)
                    if sqlite
                    else value.astimezone(UTC)
                )
            else:
                values[name] = value
        return values

    def _columns(self) -> list[tuple[str, bool]]:
        if self._selected is None:
            self._selected = [
                (c.name, isinstance(c.type, UtcDateTime))
                for c in self.statement.selected_columns  # type: ignore[attr-defined]
            ]
        return self._selected

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute for each row. A few rows of an INSERT go as one multi-row
        statement (one round trip); more use the driver's ``executemany``."""
        name = conn.dialect.name
        if 1 < len(rows) <= _MULTI_ROW_LIMIT and self._insert_columns() is not None:
            cursor = raw_cursor(conn)
            params: dict[str, Any] = {}
            for i, row in enumerate(self._bind(name, r) for r in rows):
                params.update({f"{key}_{i}": value for key, value in row.items()})
            cursor.execute(self._multi_row_sql(name, len(rows)), params)
            return
        cursor = raw_cursor(conn)
        cursor.executemany(self.sql(name), [self._bind(name, row) for row in rows])

    def _insert_columns(self) -> list[str] | None:
        if self._columns_of_insert is None:
            if not isinstance(self.statement, Insert):
                return None
            self._columns_of_insert = [c.name for c in self.statement.table.columns]
        return self._columns_of_insert

    def _multi_row_sql(self, dialect_name: str, count: int) -> str:
        key = f"{dialect_name}:{count}"
        text = self._sql.get(key)
        if text is None:
            columns = self._insert_columns() or []
            pattern = "%({})s" if dialect_name == "postgresql" else ":{}"
            values = ", ".join(
                "(" + ", ".join(pattern.format(f"{c}_{i}") for c in columns) + ")"
                for i in range(count)
            )
            table = self.statement.table.name  # type: ignore[attr-defined]
            text = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"  # noqa: S608
            with self._lock:
                self._sql[key] = text
        return text


_MULTI_ROW_LIMIT = 32


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """Send the statements run inside this block to PostgreSQL without waiting
    for each answer; they travel together and the block's end waits once.

    Reading a result (``fetchone``, ``rowcount``) inside the block waits for
    everything sent so far, so use it for statements whose answers are not
    needed until the end — and expect an error of any of them to surface at
    the end of the block. On SQLite (in-process, no round trips) it does nothing.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    with conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
        yield


def raw_cursor(conn: Connection) -> Any:
    """The driver cursor of ``conn``. On PostgreSQL one per database connection,
    reused (creating one per statement is a measurable cost on the hot path);
    on SQLite a fresh one, because a reused cursor keeps a half-read statement
    open and SQLite refuses to commit while one is."""
    if conn.dialect.name == "sqlite":
        return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    info = conn.connection.info
    cursor = info.get("tongbao_cursor")
    if cursor is None or getattr(cursor, "closed", False):
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        info["tongbao_cursor"] = cursor
    return cursor
