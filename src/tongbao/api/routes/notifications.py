"""/v1/notifications: messages the local channel delivered to me (SMS / push)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import CustomerCallDep

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.get(
    "",
    response_model=s.NotificationPage,
    summary="Messages sent to me, newest first (the local SMS/push channel)",
)
async def list_notifications(
    call: CustomerCallDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> s.NotificationPage:
    platform, customer = call.platform, call.customer
    page = platform.local_channel.messages(customer.id, cursor=cursor, limit=limit)
    return s.NotificationPage(
        next_cursor=page.next_cursor, data=[present.notification(m) for m in page.items]
    )
