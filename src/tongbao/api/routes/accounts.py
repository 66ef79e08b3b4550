"""/v1/me and /v1/accounts: who am I, balances, statements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from tongbao import errors
from tongbao.api import present
from tongbao.api import schemas as s
from tongbao.api.deps import CustomerDep, PlatformDep
from tongbao.customers import Customer
from tongbao.ledger import Account
from tongbao.ledger.model import Side
from tongbao.platform import Platform

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.get("/me", response_model=s.Me, summary="The calling customer")
def me(customer: CustomerDep) -> s.Me:
    return s.Me(
        id=customer.id,
        kind=customer.kind,
        name=customer.name,
        status=customer.status,
        account_id=customer.account_id,
    )


def _own_account(
    platform: Platform, conn: Connection, customer: Customer, account_id: str
) -> Account:
    if account_id != customer.account_id:
        raise errors.AccountNotFound(f"no account {account_id}")
    return platform.ledger.account(conn, account_id)


@router.get("/accounts", response_model=s.AccountList, summary="My accounts with balances")
def list_accounts(platform: PlatformDep, customer: CustomerDep) -> s.AccountList:
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
def get_account(account_id: str, platform: PlatformDep, customer: CustomerDep) -> s.Account:
    def read(conn: Connection) -> s.Account:
        account = _own_account(platform, conn, customer, account_id)
        return present.account(account, platform.ledger.balance(conn, account.id))

    return platform.db.read(read)


@router.get(
    "/accounts/{account_id}/statement",
    response_model=s.StatementPage,
    summary="Postings on the account, newest first, with the balance after each",
)
def statement(
    account_id: str,
    platform: PlatformDep,
    customer: CustomerDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> s.StatementPage:
    def read(conn: Connection) -> s.StatementPage:
        account = _own_account(platform, conn, customer, account_id)
        page = platform.ledger.statement(conn, account.id, cursor=cursor, limit=limit)
        credit_normal = account.rules.normal is Side.CREDIT
        return s.StatementPage(
            next_cursor=page.next_cursor,
            data=[present.statement_line(line, credit_normal=credit_normal) for line in page.items],
        )

    return platform.db.read(read)
