"""The transactional outbox: notifications (PAY-8 results) that commit with the change.

A capability calls :meth:`Notifications.enqueue` inside its own transaction,
so the notification exists if and only if the payment it reports committed.
Nothing is sent from inside a transaction (it may be retried, see
:mod:`tongbao.storage.database`); :meth:`Notifications.dispatch`, run by a
worker, sends later:

1. *Claim* due rows in a short transaction: ``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL (SQLite has one writer anyway), counting the attempt and
   leasing each row by moving ``next_attempt_at`` past the lease. After the
   commit other dispatchers skip the row until the lease runs out, so several
   can run side by side.
2. *Deliver* with no transaction open.
3. *Record* the outcome in another short transaction: sent, or retried with
   exponential back-off, or failed after ``max_attempts``.

A dispatcher that stops between 2 and 3 leaves the row to be delivered again
when its lease runs out: delivery is at least once, and channels ignore a
message id they have already delivered (see
:class:`~tongbao.notifications.channel.Message`), which makes the effect
exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import structlog
from sqlalchemy import Connection, RowMapping, delete, func, select, update

from tongbao import errors
from tongbao.clock import Clock
from tongbao.ids import new_id
from tongbao.notifications import tables as t
from tongbao.notifications.channel import (
    BatchNotificationChannel,
    DeliveryFailedError,
    Message,
    NotificationChannel,
)
from tongbao.notifications.templates import render
from tongbao.storage.database import Database
from tongbao.storage.prepared import Prepared

log = structlog.get_logger(__name__)

CHANNELS: Final = frozenset({"sms", "push"})
PENDING: Final = "pending"
SENT: Final = "sent"
FAILED: Final = "failed"

_o = t.outbox
_ID_MAX = 40  # column widths of notification_outbox
_KIND_MAX = 40
_ERROR_MAX = 200
# Enqueue runs inside payment transactions: compile the insert once.
_INSERT: Final = Prepared(_o.insert())


def backoff(
    attempts: int,
    *,
    base: timedelta = timedelta(seconds=30),
    cap: timedelta = timedelta(hours=1),
) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: doubling, capped.

    >>> [int(backoff(n).total_seconds()) for n in range(1, 9)]
    [30, 60, 120, 240, 480, 960, 1920, 3600]
    """
    # Bounding the exponent first keeps timedelta from overflowing.
    return min(base * (1 << max(0, min(attempts - 1, 30))), cap)


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one :meth:`Notifications.dispatch` call did."""

    sent: int = 0
    retried: int = 0
    """Delivery failed; the notification will be tried again after a back-off."""
    failed: int = 0
    """Given up: ``max_attempts`` reached, or the stored notification cannot be rendered."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification in the outbox and where its delivery stands."""

    id: str
    recipient_id: str
    channel: str
    kind: str
    payload: dict[str, Any]
    status: str
    """``pending``, ``sent`` or ``failed``."""
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    recipient_id: str
    channel: str
    kind: str
    payload: str
    attempts: int
    """Including the attempt this claim is for."""


def _check_payload(payload: Mapping[str, Any]) -> dict[str, str | int | None]:
    # JSON round-trips these exactly; a float amount, a datetime or a nested
    # object would come back different or not at all.
    checked: dict[str, str | int | None] = {}
    for key, value in payload.items():
        if not isinstance(key, str):
            raise TypeError(f"payload keys must be strings, not {key!r}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise TypeError(
                f"payload[{key!r}] must be a str, int or None, not {type(value).__name__}"
            )
        checked[key] = value
    return checked


class Notifications:
    """The outbox: enqueue in the business transaction, dispatch from a worker."""

    def __init__(
        self,
        clock: Clock,
        channel: NotificationChannel,
        *,
        max_attempts: int = 8,
        retry_base: timedelta = timedelta(seconds=30),
        retry_cap: timedelta = timedelta(hours=1),
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self.clock = clock
        self.channel = channel
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.lease = lease

    # --- retention (AUD-6) --------------------------------------------------------------

    def count_finished_before(self, conn: Connection, before: datetime) -> int:
        o = t.outbox.c
        return int(
            conn.execute(
                select(func.count())
                .select_from(t.outbox)
                .where(o.status.in_(("sent", "failed")), o.created_at < before)
            ).scalar_one()
        )

    def purge_finished_before(self, conn: Connection, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` delivered or abandoned notices created before ``before``."""
        o = t.outbox.c
        due = (
            select(o.id)
            .where(o.status.in_(("sent", "failed")), o.created_at < before)
            .order_by(o.created_at)
            .limit(limit)
        )
        ids = list(conn.execute(due).scalars())
        if ids:
            conn.execute(delete(t.outbox).where(o.id.in_(ids)))
        return len(ids)

    # --- enqueue ---------------------------------------------------------------------

    def enqueue(
        self,
        conn: Connection,
        *,
        recipient_id: str,
        kind: str,
        payload: Mapping[str, Any],
        channel: str = "sms",
    ) -> str:
        """Queue a notification in the caller's open transaction; returns its id.

        It commits or rolls back with the caller's change. ``payload`` values
        are ``str``, ``int`` or ``None``; a payload the kind's template cannot
        render is refused here, in the caller's transaction, rather than
        discovered by the dispatcher after the fact.
        """
        return self.enqueue_many(conn, [(recipient_id, kind, payload)], channel=channel)[0]

    def enqueue_many(
        self,
        conn: Connection,
        notices: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        channel: str = "sms",
    ) -> list[str]:
        """:meth:`enqueue` for several ``(recipient_id, kind, payload)`` at once,
        in one round trip (a payment tells payer and payee together)."""
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {sorted(CHANNELS)}, not {channel!r}")
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        ids: list[str] = []
        for recipient_id, kind, payload in notices:
            if not recipient_id or len(recipient_id) > _ID_MAX:
                raise ValueError(f"recipient_id must be 1 to {_ID_MAX} characters")
            if not kind or len(kind) > _KIND_MAX:
                raise ValueError(f"kind must be 1 to {_KIND_MAX} characters")
            checked = _check_payload(payload)
            render(kind, checked)
            ids.append(new_id("ntf"))
            rows.append(
                {
                    "id": ids[-1],
                    "recipient_id": recipient_id,
                    "channel": channel,
                    "kind": kind,
                    "payload": orjson.dumps(checked, option=orjson.OPT_SORT_KEYS).decode(),
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": None,
                    "created_at": now,
                    "sent_at": None,
                }
            )
        if len(rows) == 1:
            _INSERT.run(conn, rows[0])
        elif rows:
            _INSERT.many(conn, rows)
        return ids

    # --- queries -----------------------------------------------------------------------

    def entry(self, conn: Connection, notification_id: str) -> OutboxEntry:
        row = conn.execute(select(_o).where(_o.c.id == notification_id)).first()
        if row is None:
            raise errors.NotFound(f"no notification {notification_id}")
        return _entry(row._mapping)

    def entries_for(self, conn: Connection, recipient_id: str) -> list[OutboxEntry]:
        """A recipient's notifications in the outbox, oldest first."""
        rows = conn.execute(select(_o).where(_o.c.recipient_id == recipient_id).order_by(_o.c.id))
        return [_entry(row._mapping) for row in rows]

    # --- dispatch ----------------------------------------------------------------------

    def dispatch(self, db: Database, *, limit: int = 100) -> DispatchReport:
        """Deliver up to ``limit`` due notifications; see the module docstring."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        lease_end = self.clock.now() + self.lease
        claimed, exhausted = db.run(
            lambda conn: self._claim(conn, limit, lease_end), what="outbox_claim"
        )
        retried = 0
        failed = exhausted
        left: list[_Claimed] = []
        ready: list[tuple[_Claimed, Message]] = []
        for row in claimed:
            message = self._message(db, row)
            if message is None:
                failed += 1
            else:
                ready.append((row, message))
        delivered: list[str] = []
        if ready and isinstance(self.channel, BatchNotificationChannel):
            try:
                self.channel.deliver_batch([message for _, message in ready])
                delivered, ready = [row.id for row, _ in ready], []
            except Exception:  # one by one below, so a bad message fails alone
                log.warning("outbox_batch_failed", size=len(ready))
        for index, (row, message) in enumerate(ready):
            if self.clock.now() >= lease_end:
                left = [r for r, _ in ready[index:]]
                break
            outcome = self._deliver(db, row, message)
            if outcome == SENT:
                delivered.append(row.id)
            retried += outcome == PENDING
            failed += outcome == FAILED
        if delivered:
            db.run(lambda conn: self._record_sent(conn, delivered), what="outbox_record")
        sent = len(delivered)
        if left:
            # Another dispatcher may now claim what is left; let it, and give
            # back the attempts this claim counted but never made.
            db.run(lambda conn: self._release(conn, left, lease_end), what="outbox_release")
            log.warning("outbox_lease_ran_out", left=len(left))
        return DispatchReport(sent=sent, retried=retried, failed=failed)

    def _claim(
        self, conn: Connection, limit: int, lease_end: datetime
    ) -> tuple[list[_Claimed], int]:
        now = self.clock.now()
        due = conn.execute(
            select(_o.c.id, _o.c.recipient_id, _o.c.channel, _o.c.kind, _o.c.payload, _o.c.attempts)
            .where(_o.c.status == PENDING, _o.c.next_attempt_at <= now)
            .order_by(_o.c.next_attempt_at, _o.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # ignored by SQLite, whose writer is alone
        ).all()
        # A row already at max_attempts was claimed before by a dispatcher that
        # never recorded an outcome (it crashed, or the message crashes it).
        # Give up on it rather than loop forever.
        exhausted = [row.id for row in due if row.attempts >= self.max_attempts]
        if exhausted:
            conn.execute(
                update(_o)
                .where(_o.c.id.in_(exhausted))
                .values(
                    status=FAILED,
                    last_error=f"no outcome recorded after {self.max_attempts} attempts",
                )
            )
            log.error("outbox_gave_up", ids=exhausted)
        claimed = [
            _Claimed(row.id, row.recipient_id, row.channel, row.kind, row.payload, row.attempts + 1)
            for row in due
            if row.attempts < self.max_attempts
        ]
        if claimed:
            conn.execute(
                update(_o)
                .where(_o.c.id.in_([row.id for row in claimed]))
                .values(attempts=_o.c.attempts + 1, next_attempt_at=lease_end)
            )
        return claimed, len(exhausted)

    def _release(self, conn: Connection, rows: Sequence[_Claimed], lease_end: datetime) -> None:
        # Only rows still under this claim's lease: one another dispatcher
        # claimed since carries that dispatcher's lease end instead.
        conn.execute(
            update(_o)
            .where(
                _o.c.id.in_([row.id for row in rows]),
                _o.c.status == PENDING,
                _o.c.next_attempt_at == lease_end,
            )
            .values(attempts=_o.c.attempts - 1, next_attempt_at=self.clock.now())
        )

    def _message(self, db: Database, row: _Claimed) -> Message | None:
        """The message of a claimed row, or ``None`` (recorded as failed) if it
        cannot be rendered — retrying cannot help that."""
        try:
            payload = orjson.loads(row.payload)
            text = render(row.kind, payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            log.error("outbox_unrenderable", id=row.id, kind=row.kind, error=str(exc))
            self._record(db, row.id, FAILED, error=f"cannot render: {exc}")
            return None
        return Message(
            id=row.id,
            recipient_id=row.recipient_id,
            channel=row.channel,
            kind=row.kind,
            text=text,
            payload=payload,
        )

    def _deliver(self, db: Database, row: _Claimed, message: Message) -> str:
        """Deliver one message; record a failure at once, leave a success to the
        caller (recorded with the others in one statement); returns the new status."""
        try:
            self.channel.deliver(message)
        except Exception as exc:
            # DeliveryFailedError is the expected refusal; anything else is a
            # channel bug, retried the same way (and logged with its traceback)
            # so one bad message cannot stop the others behind it.
            if not isinstance(exc, DeliveryFailedError):
                log.exception("outbox_channel_error", id=row.id)
            error = str(exc) or type(exc).__name__
            if row.attempts >= self.max_attempts:
                log.error("outbox_failed", id=row.id, attempts=row.attempts, error=error)
                self._record(db, row.id, FAILED, error=error)
                return FAILED
            delay = backoff(row.attempts, base=self.retry_base, cap=self.retry_cap)
            self._record(db, row.id, PENDING, error=error, retry_at=self.clock.now() + delay)
            return PENDING
        return SENT

    def _record_sent(self, conn: Connection, ids: Sequence[str]) -> None:
        # Only rows still pending: a "sent" written by another dispatcher stands.
        conn.execute(
            update(_o)
            .where(_o.c.id.in_(ids), _o.c.status == PENDING)
            .values(status=SENT, sent_at=self.clock.now())
        )

    def _record(
        self,
        db: Database,
        notification_id: str,
        status: str,
        *,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if status == SENT:
            values["sent_at"] = self.clock.now()
        if error is not None:
            values["last_error"] = error[:_ERROR_MAX]
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        # Never overwrite a final state: if the lease ran out and another
        # dispatcher already delivered the row, its "sent" stands.
        statement = (
            update(_o).where(_o.c.id == notification_id, _o.c.status == PENDING).values(values)
        )
        db.run(lambda conn: conn.execute(statement), what="outbox_record")


def _entry(row: RowMapping) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        recipient_id=row["recipient_id"],
        channel=row["channel"],
        kind=row["kind"],
        payload=orjson.loads(row["payload"]),
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
    )
