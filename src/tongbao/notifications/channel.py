"""Where notifications go. The outbox dispatcher is the only caller.

A real SMS gateway, app-push service or merchant webhook implements
:class:`NotificationChannel`; :class:`tongbao.notifications.local.LocalChannel`
stores messages in the database so they can be listed
(``tongbao notifications list``, ``GET /v1/notifications``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    """The outbox id. Channels must treat a repeated id as already delivered:
    the dispatcher delivers at least once, so this makes it exactly once."""
    recipient_id: str
    channel: str
    kind: str
    text: str
    payload: dict[str, Any]


class DeliveryFailedError(Exception):
    """The channel could not deliver now; the dispatcher retries with back-off."""


class NotificationChannel(Protocol):
    def deliver(self, message: Message) -> None:
        """Deliver one message or raise :class:`DeliveryFailedError`."""
        ...


@runtime_checkable
class BatchNotificationChannel(NotificationChannel, Protocol):
    """A channel that can take many messages at once (SMS gateways have batch
    APIs). The dispatcher prefers it: a payment sends two notices, so under
    load one call per message would cost more than the payments themselves."""

    def deliver_batch(self, messages: Sequence[Message]) -> None:
        """Deliver all of ``messages`` or raise; the dispatcher then retries them one by one."""
        ...
