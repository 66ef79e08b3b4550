"""A channel that keeps messages in the database, for development and the demo.

``tongbao notifications list`` and ``GET /v1/notifications`` read them back
with :meth:`LocalChannel.messages`. The row id is the outbox id, so a message
the dispatcher delivers twice (it delivers at least once) is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from tongbao.clock import Clock
from tongbao.notifications import tables as t
from tongbao.notifications.channel import DeliveryFailedError, Message
from tongbao.pagination import Page, check_limit, page_of
from tongbao.storage.database import Database

_m = t.local_messages


@dataclass(frozen=True, slots=True)
class LocalMessage:
    """A delivered message as the recipient would have received it."""

    id: str
    recipient_id: str
    channel: str
    kind: str
    text: str
    payload: dict[str, Any]
    delivered_at: datetime


class LocalChannel:
    """:class:`~tongbao.notifications.channel.NotificationChannel` into ``local_notifications``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def deliver(self, message: Message) -> None:
        """Store ``message`` in its own transaction; a repeated id changes nothing."""
        self.deliver_batch([message])

    def deliver_batch(self, messages: Sequence[Message]) -> None:
        """Store ``messages`` in one transaction; repeated ids change nothing."""
        now = self.clock.now()
        rows = [
            {
                "id": message.id,
                "recipient_id": message.recipient_id,
                "channel": message.channel,
                "kind": message.kind,
                "text": message.text,
                "payload": orjson.dumps(message.payload, option=orjson.OPT_SORT_KEYS).decode(),
                "delivered_at": now,
            }
            for message in messages
        ]
        if not rows:
            return
        # INSERT … ON CONFLICT DO NOTHING exists in both dialects, under one spelling.
        # One statement with the rows as parameters (not .values(rows)): its
        # compiled form is cached, where a multi-VALUES statement is compiled
        # afresh for every batch — most of the delivery's CPU under load.
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        statement = dialect.insert(_m).on_conflict_do_nothing(index_elements=[_m.c.id])
        try:
            self.db.run(lambda conn: conn.execute(statement, rows), what="local_notification")
        except DBAPIError as exc:
            # The store is this channel's "gateway": unreachable means try later.
            raise DeliveryFailedError(f"local store unavailable: {exc.orig or exc}") from exc

    def messages(
        self, recipient_id: str | None = None, *, cursor: str | None = None, limit: int = 20
    ) -> Page[LocalMessage]:
        """Delivered messages, newest first; all recipients' when ``recipient_id`` is ``None``."""
        check_limit(limit)
        query = select(_m).order_by(_m.c.id.desc()).limit(limit + 1)
        if recipient_id is not None:
            query = query.where(_m.c.recipient_id == recipient_id)
        if cursor:
            query = query.where(_m.c.id < cursor)

        def fetch(conn: Connection) -> list[LocalMessage]:
            return [
                LocalMessage(
                    id=row.id,
                    recipient_id=row.recipient_id,
                    channel=row.channel,
                    kind=row.kind,
                    text=row.text,
                    payload=orjson.loads(row.payload),
                    delivered_at=row.delivered_at,
                )
                for row in conn.execute(query)
            ]

        return page_of(self.db.read(fetch), limit, lambda message: message.id)

    def count_delivered_before(self, conn: Connection, before: datetime) -> int:
        query = select(func.count()).select_from(_m).where(_m.c.delivered_at < before)
        return int(conn.execute(query).scalar_one())

    def purge_delivered_before(self, conn: Connection, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` stored messages delivered before ``before`` (AUD-6)."""
        due = select(_m.c.id).where(_m.c.delivered_at < before).order_by(_m.c.id).limit(limit)
        ids = list(conn.execute(due).scalars())
        if ids:
            conn.execute(delete(_m).where(_m.c.id.in_(ids)))
        return len(ids)
