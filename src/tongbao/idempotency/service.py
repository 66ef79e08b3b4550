"""Idempotency keys: a retried request has exactly one effect.

The key's record is written in the *same* transaction as the effect, so a
crash leaves either both or neither. The record is inserted first, as a
placeholder: a concurrent request with the same key then blocks on the
primary key until the first commits (PostgreSQL) or waits for the write lock
(SQLite), and afterwards finds the finished record and replays it — it never
runs the operation a second time, and never reports a refusal caused by the
first request's own effect.

Only successful results are stored. A refused request (bad input, not
enough money) writes nothing, so retrying it with the same key runs it again.

Requests that call a bank run in two phases (Stripe's "recovery points"):
``operation`` commits the intent together with the key, marked incomplete
(status 0); ``complete`` then talks to the bank outside any transaction and
the final response is stored. A retry that finds an incomplete key runs
``complete`` again — which must itself be safe to repeat — instead of the
operation, so a crash between the phases is finished by the client's retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from tongbao import errors
from tongbao.clock import Clock
from tongbao.idempotency.tables import idempotency_keys as t
from tongbao.storage import Database, is_unique_violation
from tongbao.storage.prepared import Prepared

MAX_KEY_LENGTH = 255

_CLAIM = Prepared(insert(t))
_FINISH = Prepared(
    update(t)
    .where(t.c.principal_id == bindparam("p_principal"), t.c.key == bindparam("p_key"))
    .values(status_code=bindparam("p_status"), response_body=bindparam("p_body"))
)


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int
    body: str
    replayed: bool


def request_hash(method: str, path: str, body: bytes) -> str:
    """Fingerprint of a request: same key with another fingerprint is refused."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise errors.IdempotencyKeyMissing("send an 'Idempotency-Key' header (e.g. a UUID)")
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise errors.IdempotencyKeyInvalid(
            f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


class Idempotency:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def run(
        self,
        *,
        principal_id: str,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
        operation: Callable[[Connection], tuple[int, str]],
        complete: Callable[[str], tuple[int, str]] | None = None,
        discard_on_refusal: bool = False,
    ) -> Outcome:
        """Run ``operation`` once per (principal, key); replay its stored result after.

        ``discard_on_refusal``: if ``complete`` is refused (a :class:`TongbaoError`),
        forget the key, for operations whose first phase wrote nothing else — so
        a refusal leaves no trace and a retry starts afresh.
        """
        check_key(key)
        incomplete = 0

        def attempt(conn: Connection) -> Outcome:
            _CLAIM.run(
                conn,
                {
                    "principal_id": principal_id,
                    "key": key,
                    "method": method,
                    "path": path,
                    "request_hash": fingerprint,
                    "status_code": 0,
                    "response_body": "",
                    "created_at": self.clock.now(),
                },
            )
            status, body = operation(conn)
            if complete is not None:
                status = incomplete
            _FINISH.run(
                conn,
                {"p_principal": principal_id, "p_key": key, "p_status": status, "p_body": body},
            )
            return Outcome(status, body, replayed=False)

        while True:
            try:
                outcome = self.db.run(attempt, what="idempotent request")
                break
            except Exception as exc:
                if not is_unique_violation(exc):
                    raise
            stored = self.db.read(lambda conn: self._stored(conn, principal_id, key))
            if stored is None:  # the other request rolled back after all: run ours
                continue
            if stored[0] != fingerprint:
                raise errors.IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was first used with a different request"
                )
            outcome = Outcome(stored[1], stored[2], replayed=True)
            break
        if outcome.status_code != incomplete:
            return outcome
        if complete is None:
            raise errors.IdempotencyKeyReused(
                f"Idempotency-Key {key!r} belongs to a request of another kind"
            )
        try:
            status, body = complete(outcome.body)
        except errors.TongbaoError:
            if discard_on_refusal:
                self.db.run(lambda conn: self._discard_incomplete(conn, principal_id, key))
            raise
        self.db.run(lambda conn: self._finish_incomplete(conn, principal_id, key, status, body))
        return Outcome(status, body, replayed=outcome.replayed)

    def _finish_incomplete(
        self, conn: Connection, principal_id: str, key: str, status: int, body: str
    ) -> None:
        conn.execute(
            update(t)
            .where(t.c.principal_id == principal_id, t.c.key == key, t.c.status_code == 0)
            .values(status_code=status, response_body=body)
        )

    def _discard_incomplete(self, conn: Connection, principal_id: str, key: str) -> None:
        conn.execute(
            delete(t).where(t.c.principal_id == principal_id, t.c.key == key, t.c.status_code == 0)
        )

    def _stored(self, conn: Connection, principal_id: str, key: str) -> tuple[str, int, str] | None:
        row = conn.execute(
            select(t.c.request_hash, t.c.status_code, t.c.response_body).where(
                t.c.principal_id == principal_id, t.c.key == key
            )
        ).first()
        return None if row is None else (row[0], row[1], row[2])

    def purge(self, conn: Connection, *, older_than: datetime) -> int:
        """Forget keys older than the retention window (retries come within minutes)."""
        return conn.execute(delete(t).where(t.c.created_at < older_than)).rowcount
