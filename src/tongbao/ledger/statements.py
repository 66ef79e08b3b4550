"""The ledger's two hot statements, written out in SQL.

A journal entry changes two or three balance rows and writes an entry and its
postings. Each statement costs the client far more than the server (about
0.1 ms of Python per statement against a few µs of PostgreSQL), so an entry's
balance changes are **one** UPDATE over a short VALUES list, and on
PostgreSQL the entry and its postings are **one** INSERT (a data-modifying
CTE; SQLite lacks those and takes two, which cost it nothing without a network).

The VALUES rows are listed in account order and PostgreSQL updates a short
VALUES list row by row in that order (nested loop over the primary key), so
concurrent entries still lock rows in one global order; the rare deadlock
another plan could cause is retried by :meth:`Database.run` like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection

from tongbao.storage.prepared import raw_cursor, sqlite_time

_APPLY_TEMPLATE = """
WITH v(a, k, frozen_ok, dd, cd, dpe, cpe) AS (VALUES {rows})
UPDATE ledger_balances AS b SET
    debits_posted = b.debits_posted + v.dd,
    credits_posted = b.credits_posted + v.cd,
    debits_pending = b.debits_pending + v.dpe,
    credits_pending = b.credits_pending + v.cpe
FROM v
WHERE b.account_id = v.a AND b.bucket = v.k
  AND (b.status = 'open' OR (b.status = 'frozen' AND v.frozen_ok = 1))
  AND (NOT b.no_overdraft
       OR (b.normal_side = 'C'
           AND b.debits_posted + v.dd + b.debits_pending + v.dpe <= b.credits_posted + v.cd)
       OR (b.normal_side = 'D'
           AND b.credits_posted + v.cd + b.credits_pending + v.cpe <= b.debits_posted + v.dd))
RETURNING account_id, debits_posted, credits_posted, debits_pending, credits_pending
"""

ENTRY_COLUMNS = (
    "id",
    "kind",
    "currency",
    "reference",
    "description",
    "reverses_entry_id",
    "hold_id",
    "created_at",
)
POSTING_COLUMNS = ("account_id", "entry_id", "amount", "balance_after", "created_at")


def _marker(dialect: str, name: str, cast: str = "") -> str:
    if dialect == "postgresql":
        return f"%({name})s{cast}"
    return f":{name}"


@cache
def apply_sql(dialect: str, count: int) -> str:
    """The UPDATE applying ``count`` balance changes; parameters ``a_i`` (account),
    ``k_i`` (bucket), ``f_i`` (1 if allowed on a frozen account), and the
    counter deltas ``dd_i``, ``cd_i``, ``dpe_i``, ``cpe_i``."""
    big = "::bigint"
    rows = ", ".join(
        "("
        + ", ".join(
            (
                _marker(dialect, f"a_{i}", "::varchar"),
                _marker(dialect, f"k_{i}", "::smallint"),
                _marker(dialect, f"f_{i}", "::int"),
                _marker(dialect, f"dd_{i}", big),
                _marker(dialect, f"cd_{i}", big),
                _marker(dialect, f"dpe_{i}", big),
                _marker(dialect, f"cpe_{i}", big),
            )
        )
        + ")"
        for i in range(count)
    )
    return _APPLY_TEMPLATE.format(rows=rows)


def apply_changes(
    conn: Connection, changes: Sequence[dict[str, Any]]
) -> dict[str, tuple[int, int, int, int]]:
    """Run :func:`apply_sql`; ``changes`` are dicts with keys ``a k f dd cd dpe cpe``.
    Returns the new counters of every row that was changed, by account id; a
    missing account was refused (status or overdraft) or does not exist."""
    params = {
        f"{key}_{i}": value for i, change in enumerate(changes) for key, value in change.items()
    }
    cursor = raw_cursor(conn)
    cursor.execute(apply_sql(conn.dialect.name, len(changes)), params)
    rows = cursor.fetchall()
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}


@cache
def entry_sql(count: int) -> str:
    """PostgreSQL: insert an entry and its ``count`` postings in one statement."""
    entry = ", ".join(f"%(e_{c})s" for c in ENTRY_COLUMNS)
    postings = ", ".join(
        "(" + ", ".join(f"%(p{i}_{c})s" for c in POSTING_COLUMNS) + ")" for i in range(count)
    )
    # Built from the constant column lists only; every value is a parameter.
    return (
        f"WITH e AS (INSERT INTO ledger_entries ({', '.join(ENTRY_COLUMNS)}) VALUES ({entry})) "  # noqa: S608
        f"INSERT INTO ledger_postings ({', '.join(POSTING_COLUMNS)}) VALUES {postings}"
    )


def insert_entry(
    conn: Connection, entry: dict[str, Any], postings: Sequence[dict[str, Any]]
) -> None:
    """Insert a journal entry row and its posting rows."""
    cursor = raw_cursor(conn)
    if conn.dialect.name == "postgresql":
        params = {f"e_{key}": value for key, value in entry.items()}
        for i, posting in enumerate(postings):
            params.update({f"p{i}_{key}": value for key, value in posting.items()})
        cursor.execute(entry_sql(len(postings)), params)
        return

    def row(values: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(sqlite_time(values[c]) if c == "created_at" else values[c] for c in columns)

    cursor.execute(
        f"INSERT INTO ledger_entries ({', '.join(ENTRY_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join('?' for _ in ENTRY_COLUMNS)})",
        row(entry, ENTRY_COLUMNS),
    )
    cursor.executemany(
        f"INSERT INTO ledger_postings ({', '.join(POSTING_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join('?' for _ in POSTING_COLUMNS)})",
        [row(p, POSTING_COLUMNS) for p in postings],
    )
