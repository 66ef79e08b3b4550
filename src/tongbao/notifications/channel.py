"""Where notifications go. The outbox dispatcher is the only caller.

A real SMS gateway, app-push service or merchant webhook implements
:class:`NotificationChannel`; :class:`tongbao.notifications.local.LocalChannel`
stores messages in the database so they can be listed
(``tongbao notifications list``, ``GET /v1/notifications``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


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
