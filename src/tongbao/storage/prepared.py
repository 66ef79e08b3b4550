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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.expression import Executable

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

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Execute once; returns the DBAPI cursor (``fetchone``/``fetchall``/``rowcount``)."""
        name = conn.dialect.name
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.sql(name), self._bind(name, params))
        return cursor

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute for each row (one round trip per batch where the driver can)."""
        name = conn.dialect.name
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(self.sql(name), [self._bind(name, row) for row in rows])
