"""/v1/me and /v1/accounts: who am I, balances, statements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from tongbao import errors
from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import (
    CustomerCallDep,
    CustomerDep,
    CustomerMutationDep,
)
from tongbao.customers import Customer
from tongbao.ledger import Account
from tongbao.ledger.model import Side
from tongbao.platform import Platform

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.get("/me", response_model=s.Me, summary="The calling customer (personal data masked)")
async def me(customer: CustomerDep) -> s.Me:
    return present.me(customer)


@router.get("/me/consents", response_model=s.ConsentList, summary="My consents (DATA-1)")
async def list_consents(call: CustomerCallDep) -> s.ConsentList:
    platform, customer = call.platform, call.customer
    consents = platform.db.read(lambda conn: platform.customers.consents(conn, customer.id))
    return s.ConsentList(
        current_version=platform.settings.privacy_policy_version,
        data=[present.consent(c) for c in consents],
    )


@router.post(
    "/me/consents",
    response_model=s.Me,
    status_code=201,
    summary="Agree to the current privacy policy (DATA-1)",
)
async def give_consent(
    body: s.ConsentGive,
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer
    current = platform.settings.privacy_policy_version
    if body.version != current:
        raise errors.ValidationFailed(
            f"privacy policy {body.version} is not the current one; the current one is {current}"
        )

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 201, present.me(
            platform.customers.record_consent(conn, customer, body.version, channel="api")
        )

    return mutation.run(operation)


@router.post(
    "/me/consents/withdraw",
    response_model=s.Me,
    summary="Withdraw consent: payments stop until agreed again",
)
async def withdraw_consent(
    mutation: CustomerMutationDep,
) -> Response:
    platform, customer = mutation.platform, mutation.customer

    def operation(conn: Connection) -> tuple[int, BaseModel]:
        return 200, present.me(platform.customers.withdraw_consent(conn, customer))

    return mutation.run(operation)


def _own_account(
    platform: Platform, conn: Connection, customer: Customer, account_id: str
) -> Account:
    if account_id != customer.account_id:
        raise errors.AccountNotFound(f"no account {account_id}")
    return platform.ledger.account(conn, account_id)


@router.get("/accounts", response_model=s.AccountList, summary="My accounts with balances")
async def list_accounts(call: CustomerCallDep) -> s.AccountList:
    platform, customer = call.platform, call.customer

    def read(conn: Connection) -> s.AccountList:
        account = _own_account(platform, conn, customer, customer.account_id)
        return s.AccountList(
            data=[present.account(account, platform.ledger.balance(conn, account.id))]
        )

    return platform.db.read(read)


@router.get(
    "/accounts/{account_id}",
    response_model=s.Account,
    summary="One account: ledger, held and available balance",
)
async def get_account(account_id: str, call: CustomerCallDep) -> s.Account:
    platform, customer = call.platform, call.customer

    def read(conn: Connection) -> s.Account:
        account = _own_account(platform, conn, customer, account_id)
        return present.account(account, platform.ledger.balance(conn, account.id))

    return platform.db.read(read)


@router.get(
    "/accounts/{account_id}/statement",
    response_model=s.StatementPage,
    summary="Postings on the account, newest first, with the balance after each",
)
async def statement(
    account_id: str,
    call: CustomerCallDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> s.StatementPage:
    platform, customer = call.platform, call.customer

    def read(conn: Connection) -> s.StatementPage:
        account = _own_account(platform, conn, customer, account_id)
        page = platform.ledger.statement(conn, account.id, cursor=cursor, limit=limit)
        credit_normal = account.rules.normal is Side.CREDIT
        return s.StatementPage(
            next_cursor=page.next_cursor,
            data=[present.statement_line(line, credit_normal=credit_normal) for line in page.items],
        )

    return platform.db.read(read)
