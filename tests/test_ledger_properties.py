"""Property-based tests of the ledger invariants (L1-L8) on both engines.

The ``db`` and ``clock`` fixtures live for the whole test function, not for
one hypothesis example, so every example opens fresh accounts (ids are
unique) and reasons only about those; ``verify_ledger`` checks the whole
database after each example. The expected outcome of every operation is
worked out here from plain integers, never from :mod:`tongbao.ledger.model`.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select

from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.ledger import (
    AccountStatus,
    AccountType,
    Discrepancy,
    HoldState,
    Ledger,
    Posting,
    transfer_postings,
    verify_ledger,
)
from tongbao.ledger import tables as lt
from tongbao.storage import Database

MAX_FEN = 100_000_000
WALLETS = 4


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


# (ledger, held, available, incoming) of one account
View = tuple[int, int, int, int]


@pytest.fixture
def ledger(clock: ManualClock) -> Ledger:
    return Ledger(clock, buckets=4, max_amount_fen=MAX_FEN)


@dataclass(frozen=True)
class World:
    """Fresh accounts of one hypothesis example."""

    bank: str
    fee: str
    wallets: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        return [self.bank, self.fee, *self.wallets]


def open_world(db: Database, ledger: Ledger, funding: Sequence[int]) -> World:
    """A bank clearing account, a fee account and one wallet per funding amount."""

    def setup(conn: Connection) -> World:
        # open_account, not internal_account: a fresh bank per example, so its
        # balance reflects this example only.
        bank = ledger.open_account(conn, AccountType.BANK_CLEARING, name="bank")
        fee = ledger.open_account(conn, AccountType.FEE_INCOME, name="fees")
        wallets = []
        for i, amount in enumerate(funding):
            wallet = ledger.open_account(conn, AccountType.CUSTOMER_WALLET, name=f"w{i}")
            if amount:
                ledger.transfer(conn, transfer_postings(bank.id, wallet.id, amount))
            wallets.append(wallet.id)
        return World(bank.id, fee.id, tuple(wallets))

    return db.run(setup)


def views(db: Database, ledger: Ledger, ids: Sequence[str]) -> dict[str, View]:
    found = db.read(lambda conn: ledger.balances(conn, ids))
    return {i: (b.ledger, b.held, b.available, b.incoming) for i, b in found.items()}


def records(db: Database, ids: Sequence[str]) -> tuple[int, int, int]:
    """Entries, postings and holds touching these accounts."""

    def count(conn: Connection) -> tuple[int, int, int]:
        p, h = lt.postings, lt.holds
        entries = conn.execute(
            select(func.count(func.distinct(p.c.entry_id))).where(p.c.account_id.in_(ids))
        ).scalar_one()
        postings = conn.execute(
            select(func.count()).select_from(p).where(p.c.account_id.in_(ids))
        ).scalar_one()
        holds = conn.execute(
            select(func.count()).select_from(h).where(h.c.debit_account_id.in_(ids))
        ).scalar_one()
        return int(entries), int(postings), int(holds)

    return db.read(count)


def posting_total(db: Database, ids: Sequence[str]) -> int:
    p = lt.postings
    return int(
        db.read(
            lambda conn: conn.execute(
                select(func.coalesce(func.sum(p.c.amount), 0)).where(p.c.account_id.in_(ids))
            ).scalar_one()
        )
    )


def discrepancies(db: Database) -> set[Discrepancy]:
    return set(db.read(verify_ledger).discrepancies)


def assert_verified(db: Database, known: set[Discrepancy]) -> None:
    """``verify_ledger`` finds nothing wrong, or at least nothing new: examples
    share the database, so a discrepancy left by an earlier (failed) example
    would otherwise fail every later one and muddle shrinking."""
    report = db.read(verify_ledger)
    assert not set(report.discrepancies) - known, report.discrepancies


def attempt(db: Database, fn: Callable[[Connection], Any]) -> BaseException | None:
    """Run ``fn``; return the domain refusal it raised, if any."""
    try:
        db.run(fn)
    except errors.TongbaoError as exc:
        return exc
    return None


# --- money is conserved, wallets never go negative, refusals change nothing -------

amounts = st.integers(min_value=1, max_value=12_000)
wallet_index = st.integers(min_value=0, max_value=WALLETS - 1)
operations = st.one_of(
    st.tuples(st.just("transfer"), wallet_index, wallet_index, amounts),
    st.tuples(
        st.just("multi"),
        wallet_index,
        st.lists(
            st.tuples(wallet_index, amounts), min_size=1, max_size=3, unique_by=lambda t: t[0]
        ),
        st.integers(min_value=0, max_value=500),
    ),
    st.tuples(st.just("payout"), wallet_index, amounts),
    st.tuples(st.just("top_up"), wallet_index, amounts),
    st.tuples(st.just("too_large"), wallet_index, st.integers(MAX_FEN + 1, 3 * MAX_FEN)),
    st.tuples(st.just("unbalanced"), wallet_index, wallet_index, amounts),
    st.tuples(st.just("toggle_freeze"), wallet_index),
)


@examples(40)
@given(
    funding=st.lists(st.integers(0, 10_000), min_size=WALLETS, max_size=WALLETS),
    ops=st.lists(operations, max_size=25),
)
def test_money_is_conserved_and_refusals_change_nothing(
    db: Database, ledger: Ledger, funding: list[int], ops: list[tuple[Any, ...]]
) -> None:
    known = discrepancies(db)
    world = open_world(db, ledger, funding)
    w = world.wallets
    ids = world.ids
    # The expected state, in plain integers: wallet balances and frozen flags.
    balance = dict(zip(w, funding, strict=True))
    frozen: set[str] = set()
    fees = 0

    for op in ops:
        kind = op[0]
        # expected: ({account: change in ledger balance}, refusal class or None)
        change: dict[str, int] = {}
        refusal: type[Exception] | None = None
        if kind == "toggle_freeze":
            account = w[op[1]]
            status = AccountStatus.OPEN if account in frozen else AccountStatus.FROZEN
            db.run(lambda c, a=account, s=status: ledger.set_status(c, a, s))
            frozen ^= {account}
            continue
        if kind == "transfer":
            src, dst, amount = w[op[1]], w[op[2]], op[3]
            if src == dst:
                continue
            postings = transfer_postings(src, dst, amount)
            change = {src: -amount, dst: amount}
        elif kind == "multi":
            src, legs, fee = w[op[1]], [(w[i], a) for i, a in op[2]], op[3]
            legs = [(dst, a) for dst, a in legs if dst != src]
            if not legs:
                continue
            total = sum(a for _, a in legs) + fee
            postings = [Posting.debit(src, total)]
            postings += [Posting.credit(dst, a) for dst, a in legs]
            if fee:
                postings.append(Posting.credit(world.fee, fee))
            change = {src: -total, **dict(legs)}
        elif kind == "payout":
            src, amount = w[op[1]], op[2]
            postings = transfer_postings(src, world.bank, amount)
            change = {src: -amount}
        elif kind == "top_up":
            dst, amount = w[op[1]], op[2]
            postings = transfer_postings(world.bank, dst, amount)
            change = {dst: amount}
            src = world.bank
        elif kind == "too_large":
            src = world.bank
            postings = transfer_postings(world.bank, w[op[1]], op[2])
            refusal = errors.AmountTooLarge
        else:  # unbalanced
            src = w[op[1]]
            postings = [Posting.debit(src, op[3]), Posting.credit(w[op[2]], op[3] + 1)]
            refusal = errors.UnbalancedEntry
        if refusal is None and src in balance:
            if src in frozen:
                refusal = errors.AccountFrozen
            elif balance[src] + change[src] < 0:
                refusal = errors.InsufficientFunds

        before, counted = views(db, ledger, ids), records(db, ids)
        outcome = attempt(db, lambda c, p=postings: ledger.transfer(c, p))
        after = views(db, ledger, ids)
        if refusal is not None:
            assert isinstance(outcome, refusal), (op, outcome)
            assert after == before, op
            assert records(db, ids) == counted, op
        else:
            assert outcome is None, (op, outcome)
            for account, delta in change.items():
                balance[account] += delta
            if kind == "multi":
                fees += op[3]
            assert records(db, ids)[0] == counted[0] + 1
        for account in w:
            assert after[account] == (balance[account], 0, balance[account], 0), account
            assert after[account][2] >= 0  # L5
        assert after[world.fee][0] == fees

    # L2 over this example's accounts: what the bank paid in is in the wallets and fees.
    assert posting_total(db, ids) == 0
    final = views(db, ledger, ids)
    assert final[world.bank][0] == sum(final[a][0] for a in w) + final[world.fee][0]
    assert_verified(db, known)


# --- holds: never post more than held, the rest is released -------------------------

resolutions = st.one_of(
    st.just(("void", None)),
    st.just(("post", None)),
    st.tuples(st.just("post"), st.integers(min_value=-2, max_value=9_000)),
    st.just(("expire", None)),
)


@examples(35)
@given(
    funding=st.integers(0, 15_000),
    holds=st.lists(
        st.tuples(st.integers(1, 8_000), st.integers(1, 120), resolutions),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_posting_a_hold_never_moves_more_than_held(
    db: Database,
    ledger: Ledger,
    clock: ManualClock,
    funding: int,
    holds: list[tuple[int, int, tuple[str, int | None]]],
    data: st.DataObject,
) -> None:
    known = discrepancies(db)
    world = open_world(db, ledger, [funding, 0])
    payer, payee = world.wallets
    ids = world.ids
    posted_total = 0
    pending: dict[str, tuple[int, Any, tuple[str, int | None]]] = {}

    def check(note: object) -> None:
        held = sum(amount for amount, _, _ in pending.values())
        seen = views(db, ledger, ids)
        assert seen[payer] == (funding - posted_total, held, funding - posted_total - held, 0), note
        assert seen[payee] == (posted_total, 0, posted_total, held), note
        assert seen[payer][2] >= 0

    for amount, minutes, resolution in holds:
        expires = clock.now() + timedelta(minutes=minutes)
        available = funding - posted_total - sum(a for a, _, _ in pending.values())
        before = records(db, ids)
        try:
            hold = db.run(
                lambda c, a=amount, e=expires: ledger.create_hold(
                    c, debit_account_id=payer, credit_account_id=payee, amount=a, expires_at=e
                )
            )
        except errors.InsufficientFunds:
            assert amount > available
            assert records(db, ids) == before
        else:
            assert amount <= available
            pending[hold.id] = (amount, expires, resolution)
        check(("create", amount))

    order = data.draw(st.permutations(sorted(pending)), label="resolution order")
    for hold_id in order:
        amount, expires, (how, posted) = pending[hold_id]
        if how == "expire":
            if clock.now() < expires:
                clock.set(expires)
            assert hold_id in db.read(ledger.due_holds)
            assert db.run(lambda c, h=hold_id: ledger.expire_hold(c, h)).state is HoldState.EXPIRED
            del pending[hold_id]
            check(("expired", hold_id))
        elif how == "void":
            assert db.run(lambda c, h=hold_id: ledger.void_hold(c, h)).state is HoldState.VOIDED
            del pending[hold_id]
            check(("voided", hold_id))
        else:
            before_views, before_records = views(db, ledger, ids), records(db, ids)
            expected: type[Exception] | None = None
            if clock.now() >= expires:
                expected = errors.HoldExpired
            elif posted is not None and posted <= 0:
                expected = errors.InvalidAmount
            elif posted is not None and posted > amount:
                expected = errors.HoldAmountExceeded
            try:
                entry = db.run(lambda c, h=hold_id, p=posted: ledger.post_hold(c, h, amount=p))
            except errors.TongbaoError as exc:
                assert expected is not None and isinstance(exc, expected), exc
                assert views(db, ledger, ids) == before_views
                assert records(db, ids) == before_records
                stored = db.read(lambda c, h=hold_id: ledger.hold(c, h))
                assert stored.state is HoldState.PENDING
                # then release it the way the sweeper or the payer would (L7: all of it)
                if expected is errors.HoldExpired:
                    db.run(lambda c, h=hold_id: ledger.expire_hold(c, h))
                else:
                    db.run(lambda c, h=hold_id: ledger.void_hold(c, h))
            else:
                assert expected is None
                moved = amount if posted is None else posted
                assert moved <= amount  # L7
                assert sorted(p.amount for p in entry.postings) == [-moved, moved]
                stored = db.read(lambda c, h=hold_id: ledger.hold(c, h))
                assert (stored.state, stored.posted_amount) == (HoldState.POSTED, moved)
                assert stored.posted_entry_id == entry.id
                posted_total += moved
            del pending[hold_id]
            check(("post", hold_id, posted))
        # L6: it left PENDING once and for all
        for again in (
            lambda c, h=hold_id: ledger.post_hold(c, h),
            lambda c, h=hold_id: ledger.void_hold(c, h),
        ):
            before_views = views(db, ledger, ids)
            with pytest.raises(errors.HoldNotPending):
                db.run(again)
            assert views(db, ledger, ids) == before_views

    check("end")
    assert posting_total(db, ids) == 0
    assert_verified(db, known)


# --- a refused transaction leaves nothing behind, in memory either ------------------


class _Retryable(sqlite3.OperationalError):
    """What SQLite raises when another writer holds the lock; Database.run retries it."""

    def __init__(self) -> None:
        super().__init__("database is locked")


@examples(10)
@given(
    balance=st.integers(0, 1_000),
    fee=st.integers(1, 2_000),
)
def test_internal_account_opened_in_a_refused_transaction_can_be_opened_again(
    db: Database, ledger: Ledger, balance: int, fee: int
) -> None:
    """Regression: ``internal_account`` once cached code -> id inside the
    caller's transaction; after a rollback (a refused transfer) the cache
    named an account that did not exist, and every later call raised
    ``AccountNotFound`` until the process restarted."""
    known = discrepancies(db)
    world = open_world(db, ledger, [balance])
    (wallet,) = world.wallets
    code = f"fees:{uuid.uuid4().hex[:12]}"

    def charge(conn: Connection) -> None:
        account = ledger.internal_account(conn, AccountType.FEE_INCOME, code, name="fees")
        ledger.transfer(conn, transfer_postings(wallet, account.id, fee))

    outcome = attempt(db, charge)
    assert (outcome is None) == (fee <= balance)
    if outcome is not None:
        assert isinstance(outcome, errors.InsufficientFunds)
    account = db.run(
        lambda c: ledger.internal_account(c, AccountType.FEE_INCOME, code, name="fees")
    )
    assert db.read(lambda c: ledger.balance(c, account.id)).ledger == (
        fee if outcome is None else 0
    )
    assert_verified(db, known)


def test_internal_account_survives_a_retried_transaction(db: Database, ledger: Ledger) -> None:
    """Regression (same cause): ``Database.run`` retries a transaction that hit
    a lock conflict, and a retried function must be safe to run again; one
    that opened an internal account on its first attempt failed on the retry."""
    world = open_world(db, ledger, [500])
    (wallet,) = world.wallets
    attempts = []

    def pay_fee(conn: Connection) -> str:
        fees = ledger.internal_account(conn, AccountType.FEE_INCOME, "fees:retry", name="fees")
        ledger.transfer(conn, transfer_postings(wallet, fees.id, 100))
        attempts.append(fees.id)
        if len(attempts) == 1:
            raise _Retryable
        return fees.id

    fees_id = db.run(pay_fee)
    assert len(attempts) == 2
    assert db.read(lambda c: ledger.balance(c, fees_id)).ledger == 100
    assert_verified(db, set())


# --- holds obey the same amount limits as entries ------------------------------------


@examples(5)
@given(excess=st.integers(1, MAX_FEN))
def test_hold_above_the_maximum_amount_is_refused(
    db: Database, ledger: Ledger, clock: ManualClock, excess: int
) -> None:
    """Regression: transfers refused amounts above ``max_amount_fen`` but
    ``create_hold`` did not, so posting such a hold booked an entry above the
    maximum."""
    world = open_world(db, ledger, [MAX_FEN, MAX_FEN, 0])
    rich, other, payee = world.wallets
    db.run(lambda c: ledger.transfer(c, transfer_postings(other, rich, MAX_FEN)))
    amount = MAX_FEN + excess  # rich holds 2 * MAX_FEN, so the funds are there
    with pytest.raises(errors.AmountTooLarge):
        db.run(
            lambda c: ledger.create_hold(
                c,
                debit_account_id=rich,
                credit_account_id=payee,
                amount=amount,
                expires_at=clock.now() + timedelta(minutes=5),
            )
        )
    assert views(db, ledger, [rich])[rich] == (2 * MAX_FEN, 0, 2 * MAX_FEN, 0)


@examples(10)
@given(amount=st.integers(-20_000, 0), with_pending=st.booleans())
def test_a_hold_of_no_money_is_refused_as_an_invalid_amount(
    db: Database, ledger: Ledger, clock: ManualClock, amount: int, with_pending: bool
) -> None:
    """KNOWN BUG (``Ledger.create_hold``): the amount is only checked by
    ``check_postings``, which accepts a negative *signed* posting, so a
    negative hold reaches the database and is stopped there by a CHECK
    constraint: the caller gets a raw driver error (``sqlite3.IntegrityError``
    / ``psycopg.errors.CheckViolation``, an HTTP 500) instead of
    ``InvalidAmount`` as ``post_hold`` and ``money.check_fen`` give. Nothing
    is written. (Zero is refused as ``UnbalancedEntry``, which is accepted.)"""
    known = discrepancies(db)
    world = open_world(db, ledger, [30_000, 0])
    payer, payee = world.wallets
    expires = clock.now() + timedelta(minutes=5)

    def hold(conn: Connection, fen: int) -> object:
        return ledger.create_hold(
            conn, debit_account_id=payer, credit_account_id=payee, amount=fen, expires_at=expires
        )

    if with_pending:  # then the balance rows accept the negative change; the hold row does not
        db.run(lambda c: hold(c, 25_000))
    before, counted = views(db, ledger, world.ids), records(db, world.ids)
    try:
        db.run(lambda c: hold(c, amount))
    except Exception as exc:
        refusal: Exception | None = exc
    else:
        refusal = None
    assert views(db, ledger, world.ids) == before
    assert records(db, world.ids) == counted
    assert_verified(db, known)
    assert isinstance(refusal, (errors.InvalidAmount, errors.UnbalancedEntry)), repr(refusal)
