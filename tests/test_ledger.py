"""Ledger behaviour on both engines: transfers, holds, reversals, statuses (issue 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection

from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.ledger import (
    AccountStatus,
    AccountType,
    HoldState,
    Ledger,
    Posting,
    transfer_postings,
    verify_ledger,
)
from tongbao.storage import Database


@pytest.fixture
def ledger(clock: ManualClock) -> Ledger:
    return Ledger(clock, buckets=4, max_amount_fen=100_000_000)


@pytest.fixture
def funded(db: Database, ledger: Ledger) -> tuple[str, str, str]:
    """Wallets A (100.00 yuan) and B (empty), funded from a bank clearing account."""

    def setup(conn: Connection) -> tuple[str, str, str]:
        bank = ledger.internal_account(conn, AccountType.BANK_CLEARING, "bank:T", name="bank")
        a = ledger.open_account(conn, AccountType.CUSTOMER_WALLET, name="A", owner_id="cus_a")
        b = ledger.open_account(conn, AccountType.CUSTOMER_WALLET, name="B", owner_id="cus_b")
        ledger.transfer(conn, transfer_postings(bank.id, a.id, 10_000), description="top-up")
        return bank.id, a.id, b.id

    return db.run(setup)


def available(db: Database, ledger: Ledger, account_id: str) -> int:
    return db.read(lambda c: ledger.balance(c, account_id)).available


def counts(db: Database) -> tuple[int, int]:
    with db.snapshot() as conn:
        entries = conn.exec_driver_sql("SELECT count(*) FROM ledger_entries").scalar_one()
        holds = conn.exec_driver_sql("SELECT count(*) FROM ledger_holds").scalar_one()
    return entries, holds


def test_transfer_moves_money_and_records_balance_after(db, ledger, funded) -> None:
    _, a, b = funded
    entry = db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 2_550), reference="t1"))
    assert available(db, ledger, a) == 7_450
    assert available(db, ledger, b) == 2_550
    lines = db.read(lambda c: ledger.statement(c, a)).items
    assert [(line.amount, line.balance_after) for line in lines] == [
        (2_550, 7_450),
        (-10_000, 10_000),
    ]
    assert db.read(lambda c: ledger.entry(c, entry.id)).reference == "t1"
    assert db.read(verify_ledger).ok


def test_multi_leg_entry_with_fee(db, ledger, funded) -> None:
    _, a, b = funded
    fee = db.run(lambda c: ledger.internal_account(c, AccountType.FEE_INCOME, "fees", name="fees"))
    postings = [Posting.debit(a, 1_010), Posting.credit(b, 1_000), Posting.credit(fee.id, 10)]
    db.run(lambda c: ledger.transfer(c, postings))
    assert available(db, ledger, a) == 8_990
    assert db.read(lambda c: ledger.balance(c, fee.id)).ledger == 10
    assert db.read(verify_ledger).ok


def test_overdraft_is_refused_and_nothing_is_written(db, ledger, funded) -> None:
    _, a, b = funded
    before = counts(db)
    with pytest.raises(errors.InsufficientFunds, match=r"100\.00 available, 100\.01 needed"):
        db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 10_001)))
    assert counts(db) == before
    assert available(db, ledger, a) == 10_000


@pytest.mark.parametrize(
    ("postings", "error"),
    [
        ([Posting("x", 5)], errors.UnbalancedEntry),
        ([Posting("x", 5), Posting("y", -4)], errors.UnbalancedEntry),
        ([Posting("x", 0), Posting("y", 0)], errors.UnbalancedEntry),
        ([Posting("x", 5), Posting("x", -5)], errors.UnbalancedEntry),
    ],
)
def test_malformed_entries_are_refused(db, ledger, funded, postings, error) -> None:
    with pytest.raises(error):
        db.run(lambda c: ledger.transfer(c, postings))


def test_unknown_account_and_currency_mismatch(db, ledger, funded) -> None:
    _, a, _ = funded
    with pytest.raises(errors.AccountNotFound):
        db.run(lambda c: ledger.transfer(c, transfer_postings(a, "acct_nope", 1)))
    usd = db.run(
        lambda c: ledger.open_account(c, AccountType.CUSTOMER_WALLET, name="U", currency="USD")
    )
    with pytest.raises(errors.CurrencyMismatch):
        db.run(lambda c: ledger.transfer(c, transfer_postings(a, usd.id, 1)))
    assert available(db, ledger, a) == 10_000


def test_frozen_account_receives_but_cannot_pay(db, ledger, funded) -> None:
    bank, a, b = funded
    db.run(lambda c: ledger.set_status(c, a, AccountStatus.FROZEN))
    with pytest.raises(errors.AccountFrozen):
        db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 1)))
    db.run(lambda c: ledger.transfer(c, transfer_postings(bank, a, 5)))
    assert available(db, ledger, a) == 10_005
    db.run(lambda c: ledger.set_status(c, a, AccountStatus.OPEN))
    db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 1)))


def test_closing_needs_an_empty_account_and_is_final(db, ledger, funded) -> None:
    bank, a, b = funded
    with pytest.raises(errors.AccountNotEmpty):
        db.run(lambda c: ledger.set_status(c, a, AccountStatus.CLOSED))
    db.run(lambda c: ledger.transfer(c, transfer_postings(a, bank, 10_000)))
    db.run(lambda c: ledger.set_status(c, a, AccountStatus.CLOSED))
    with pytest.raises(errors.AccountClosed):
        db.run(lambda c: ledger.transfer(c, transfer_postings(b, a, 0 + 1)))
    with pytest.raises(errors.AccountClosed):
        db.run(lambda c: ledger.set_status(c, a, AccountStatus.OPEN))


def test_hold_reserves_then_posts_part_and_releases_the_rest(db, ledger, funded, clock) -> None:
    _, a, b = funded
    hold = db.run(
        lambda c: ledger.create_hold(
            c,
            debit_account_id=a,
            credit_account_id=b,
            amount=6_000,
            expires_at=clock.now() + timedelta(minutes=10),
        )
    )
    bal = db.read(lambda c: ledger.balance(c, a))
    assert (bal.ledger, bal.held, bal.available) == (10_000, 6_000, 4_000)
    assert db.read(lambda c: ledger.balance(c, b)).incoming == 6_000
    with pytest.raises(errors.InsufficientFunds):
        db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 4_001)))
    with pytest.raises(errors.HoldAmountExceeded):
        db.run(lambda c: ledger.post_hold(c, hold.id, amount=6_001))
    db.run(lambda c: ledger.post_hold(c, hold.id, amount=2_500))
    bal = db.read(lambda c: ledger.balance(c, a))
    assert (bal.ledger, bal.held, bal.available) == (7_500, 0, 7_500)
    assert db.read(lambda c: ledger.balance(c, b)).ledger == 2_500
    with pytest.raises(errors.HoldNotPending):
        db.run(lambda c: ledger.post_hold(c, hold.id))
    with pytest.raises(errors.HoldNotPending):
        db.run(lambda c: ledger.void_hold(c, hold.id))
    assert db.read(verify_ledger).ok


def test_void_and_expiry_release_the_whole_hold(db, ledger, funded, clock) -> None:
    _, a, b = funded

    def hold(minutes: int):
        return db.run(
            lambda c: ledger.create_hold(
                c,
                debit_account_id=a,
                credit_account_id=b,
                amount=3_000,
                expires_at=clock.now() + timedelta(minutes=minutes),
            )
        )

    voided, expiring = hold(10), hold(1)
    assert available(db, ledger, a) == 4_000
    assert db.run(lambda c: ledger.void_hold(c, voided.id)).state is HoldState.VOIDED
    clock.advance(timedelta(minutes=2))
    with pytest.raises(errors.HoldExpired):
        db.run(lambda c: ledger.post_hold(c, expiring.id))
    assert db.read(ledger.due_holds) == [expiring.id]
    assert db.run(lambda c: ledger.expire_hold(c, expiring.id)).state is HoldState.EXPIRED
    assert available(db, ledger, a) == 10_000
    assert db.read(ledger.due_holds) == []
    assert db.read(verify_ledger).ok


def test_frozen_account_can_release_but_not_post_a_hold(db, ledger, funded, clock) -> None:
    _, a, b = funded
    hold = db.run(
        lambda c: ledger.create_hold(
            c,
            debit_account_id=a,
            credit_account_id=b,
            amount=1_000,
            expires_at=clock.now() + timedelta(minutes=10),
        )
    )
    db.run(lambda c: ledger.set_status(c, a, AccountStatus.FROZEN))
    with pytest.raises(errors.AccountFrozen):
        db.run(lambda c: ledger.post_hold(c, hold.id))
    db.run(lambda c: ledger.void_hold(c, hold.id))
    assert available(db, ledger, a) == 10_000


def test_reversal_negates_once(db, ledger, funded) -> None:
    _, a, b = funded
    entry = db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 1_000)))
    reversal = db.run(lambda c: ledger.reverse(c, entry.id, description="wrong payee"))
    assert sorted(reversal.postings, key=lambda p: p.account_id) == sorted(
        (Posting(p.account_id, -p.amount) for p in entry.postings), key=lambda p: p.account_id
    )
    assert available(db, ledger, a) == 10_000
    with pytest.raises(errors.AlreadyReversed):
        db.run(lambda c: ledger.reverse(c, entry.id, description="again"))
    with pytest.raises(errors.InvalidRequest):
        db.run(lambda c: ledger.reverse(c, reversal.id, description="undo the undo"))
    assert db.read(verify_ledger).ok


def test_reversal_cannot_overdraw_a_wallet_that_spent_the_money(db, ledger, funded) -> None:
    bank, a, b = funded
    entry = db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 1_000)))
    db.run(lambda c: ledger.transfer(c, transfer_postings(b, bank, 1_000)))
    with pytest.raises(errors.InsufficientFunds):
        db.run(lambda c: ledger.reverse(c, entry.id, description="too late"))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount + 1",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_entries SET description = 'edited'",
        "DELETE FROM ledger_entries",
    ],
)
def test_entries_and_postings_are_append_only_in_the_database(db, funded, statement) -> None:
    with pytest.raises(Exception, match="append-only"), db.transaction() as conn:
        conn.exec_driver_sql(statement)


def _without_triggers(db: Database, sql: str) -> None:
    with db.transaction() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER ledger_postings_append_only_update")
            conn.exec_driver_sql(sql)
        else:
            conn.exec_driver_sql("ALTER TABLE ledger_postings DISABLE TRIGGER USER")
            conn.exec_driver_sql(sql)
            conn.exec_driver_sql("ALTER TABLE ledger_postings ENABLE TRIGGER USER")


def test_verify_names_tampered_balances_and_postings(db, ledger, funded) -> None:
    _, a, b = funded
    db.run(lambda c: ledger.transfer(c, transfer_postings(a, b, 1_000)))
    with db.transaction() as conn:
        conn.exec_driver_sql(
            f"UPDATE ledger_balances SET credits_posted = credits_posted + 1 "
            f"WHERE account_id = '{b}'"
        )
    report = db.read(verify_ledger)
    assert [(d.invariant, d.subject) for d in report.discrepancies] == [("L3", b), ("L2", "ledger")]

    _without_triggers(db, f"UPDATE ledger_postings SET amount = -999 WHERE account_id = '{b}'")
    invariants = {d.invariant for d in db.read(verify_ledger).discrepancies}
    assert {"L1", "L2", "L3"} <= invariants
