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
from tongbao.api.deps import CustomerDep, MutationDep, PlatformDep
from tongbao.customers import Customer
from tongbao.ledger import Account
from tongbao.ledger.model import Side
from tongbao.platform import Platform

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.get("/me", response_model=s.Me, summary="The calling customer (personal data masked)")
def me(customer: CustomerDep) -> s.Me:
    return present.me(customer)


@router.get("/me/consents", response_model=s.ConsentList, summary="My consents (DATA-1)")
def list_consents(platform: PlatformDep, customer: CustomerDep) -> s.ConsentList:
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
def give_consent(
    body: s.ConsentGive,
    platform: PlatformDep,
    customer: CustomerDep,
    mutation: MutationDep,
) -> Response:
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
def withdraw_consent(
    platform: PlatformDep,
    customer: CustomerDep,
    mutation: MutationDep,
) -> Response:
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
