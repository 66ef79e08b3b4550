"""Notifications (PAY-8 results, PAY-9 failures, verification codes).

Public API: :class:`Notifications` (the transactional outbox: ``enqueue`` in
the business transaction, ``dispatch`` from a worker), the channel protocol
and :class:`Message`, :class:`LocalChannel` (messages kept in the database)
and :func:`render` (the SMS texts).
"""

from tongbao.notifications.channel import DeliveryFailedError, Message, NotificationChannel
from tongbao.notifications.local import LocalChannel, LocalMessage
from tongbao.notifications.outbox import DispatchReport, Notifications, OutboxEntry, backoff
from tongbao.notifications.templates import KINDS, render

__all__ = [
    "KINDS",
    "DeliveryFailedError",
    "DispatchReport",
    "LocalChannel",
    "LocalMessage",
    "Message",
    "NotificationChannel",
    "Notifications",
    "OutboxEntry",
    "backoff",
    "render",
]
