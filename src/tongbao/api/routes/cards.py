"""/v1/cards: bind, list and unbind bank cards (ACC-6, PAY-2)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import (
    CustomerCallDep,
    CustomerMutationDep,
)
from tongbao.customers import bankcard

router = APIRouter(prefix="/v1/cards", tags=["cards"])


@router.post(
    "",
    status_code=201,
    response_model=s.Card,
    summary="Bind a bank card (signs a quick-pay agreement with the bank)",
)
async def bind_card(
    body: s.CardBind,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    expires_on = bankcard.expiry_date(body.expires)
    bankcard.validate(body.card_number)

    # The bank is called outside our transaction; the idempotency record then
    # points at the stored card, so a retry does not sign a second agreement.
    def operation(_: Connection) -> tuple[int, BaseModel]:
        return 202, present.me(customer)

    def complete(_: str) -> tuple[int, BaseModel]:
        card = platform.customers.bind_card(
            platform.db,
            customer.id,
            bank_code=body.bank_code,
            card_number=body.card_number,
            holder_name=body.holder_name,
            phone=body.phone,
            expires_on=expires_on,
        )
        return 201, present.card(card)

    return mutation.run(operation, complete, discard_on_refusal=True)


@router.get("", response_model=s.CardList, summary="My bound cards")
async def list_cards(call: CustomerCallDep) -> s.CardList:
    platform, customer = call.platform, call.customer
    cards = platform.db.read(lambda conn: platform.customers.cards(conn, customer.id))
    return s.CardList(data=[present.card(c) for c in cards])


@router.delete("/{card_id}", response_model=s.Card, summary="Unbind a card")
async def unbind_card(
    card_id: str,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 202, present.card(platform.customers.card(conn, customer.id, card_id))

    def complete(_: str) -> tuple[int, BaseModel]:
        card = platform.customers.unbind_card(platform.db, customer.id, card_id)
        return 200, present.card(card).model_copy(update={"status": "unbound"})

    return mutation.run(operation, complete, discard_on_refusal=True)
