"""A hypothesis state machine drives the real ledger and a model side by side.

The model below is written from the accounting rules alone (normal sides,
pending counters, who may pay out), not from :mod:`tongbao.ledger.model`:
every account keeps four plain integers, and each rule works out beforehand
whether the ledger must accept the operation and, if not, which refusal it
must give. After every step the ledger's view of every account (ledger,
held, available, incoming) must equal the model's; at teardown every
pending hold is voided and ``verify_ledger`` must find nothing wrong.

Runs on SQLite and PostgreSQL (the ``db`` fixture); each hypothesis example
opens its own accounts, so examples sharing one database do not interfere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, func, select

from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.ledger import (
    AccountBalance,
    AccountStatus,
    AccountType,
    HoldState,
    Ledger,
    Posting,
    verify_ledger,
)
from tongbao.ledger import tables as lt
from tongbao.storage import Database

MAX_FEN = 100_000_000
START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

WALLETS = ("w0", "w1", "w2")
PAYERS = (*WALLETS, "merchant")  # accounts that may never be overdrawn
PAYEES = (*PAYERS, "bank")
FREEZABLE = PAYERS
HOLD_PAIRS = [(d, c) for d in PAYERS for c in PAYEES if d != c]

Refusal = type[Exception]


# --- the model ------------------------------------------------------------------------


@dataclass
class ModelAccount:
    """An account as four integers. Credit-normal accounts (what we owe:
    wallets, merchants, fee income) grow with credits; debit-normal ones
    (what a bank owes us) with debits."""

    credit_normal: bool
    no_overdraft: bool
    frozen: bool = False
    debits: int = 0
    credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    @property
    def ledger(self) -> int:
        return self.credits - self.debits if self.credit_normal else self.debits - self.credits

    @property
    def held(self) -> int:
        """Pending outflows."""
        return self.pending_debits if self.credit_normal else self.pending_credits

    @property
    def incoming(self) -> int:
        return self.pending_credits if self.credit_normal else self.pending_debits

    @property
    def available(self) -> int:
        return self.ledger - self.held

    def outflow(self, signed: int) -> int:
        """How much a signed posting (debit > 0) takes out of this account."""
        out = signed if self.credit_normal else -signed
        return max(out, 0)

    def refusal(self, signed: int) -> Refusal | None:
        """Why a posting, or the reservation of one, may not happen here."""
        out = self.outflow(signed)
        if not out:
            return None  # money coming in is always welcome, frozen or not
        if self.frozen:
            return errors.AccountFrozen
        if self.no_overdraft and self.available < out:
            return errors.InsufficientFunds
        return None

    def post(self, signed: int) -> None:
        if signed > 0:
            self.debits += signed
        else:
            self.credits -= signed


@dataclass
class ModelHold:
    debit: str
    credit: str
    amount: int
    expires_at: datetime
    state: HoldState = HoldState.PENDING


@dataclass
class ModelEntry:
    postings: dict[str, int]  # account name -> signed amount
    is_reversal: bool = False
    reversed: bool = False


@dataclass
class Model:
    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    entries: dict[str, ModelEntry] = field(default_factory=dict)

    def refusals(self, postings: dict[str, int]) -> set[Refusal]:
        found = {self.accounts[name].refusal(signed) for name, signed in postings.items()}
        return found - {None}  # type: ignore[return-value]

    def record(self, entry_id: str, postings: dict[str, int], *, is_reversal: bool) -> None:
        for name, signed in postings.items():
            self.accounts[name].post(signed)
        self.entries[entry_id] = ModelEntry(dict(postings), is_reversal=is_reversal)

    def reserve(self, hold: ModelHold) -> None:
        self.accounts[hold.debit].pending_debits += hold.amount
        self.accounts[hold.credit].pending_credits += hold.amount

    def release(self, hold: ModelHold, state: HoldState) -> None:
        assert hold.state is HoldState.PENDING
        self.accounts[hold.debit].pending_debits -= hold.amount
        self.accounts[hold.credit].pending_credits -= hold.amount
        hold.state = state


# --- the machine ----------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    entries = Bundle("entries")

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.clock = ManualClock(START)
        self.ledger = Ledger(self.clock, buckets=4, max_amount_fen=MAX_FEN)
        kinds = {
            "bank": (AccountType.BANK_CLEARING, False, False),
            "fee": (AccountType.FEE_INCOME, True, False),
            "merchant": (AccountType.MERCHANT, True, True),
            **{w: (AccountType.CUSTOMER_WALLET, True, True) for w in WALLETS},
        }
        self.model = Model()
        for name, (_, credit_normal, no_overdraft) in kinds.items():
            self.model.accounts[name] = ModelAccount(credit_normal, no_overdraft)

        def open_all(conn: Connection) -> dict[str, str]:
            return {
                name: self.ledger.open_account(conn, kind, name=name).id
                for name, (kind, _, _) in kinds.items()
            }

        self.ids = db.run(open_all)
        # Examples share the database; should an earlier one have broken it,
        # only discrepancies new in this example are this example's fault.
        self.known = set(db.read(verify_ledger).discrepancies)
        self.names = {account_id: name for name, account_id in self.ids.items()}

    @initialize(funding=st.lists(st.integers(0, 30_000), min_size=4, max_size=4))
    def fund(self, funding: list[int]) -> None:
        """Start with some money in the wallets and the merchant account."""
        for account, amount in zip(PAYERS, funding, strict=True):
            if amount:
                self.top_up(account, amount)

    # -- helpers --

    def _postings(self, postings: dict[str, int]) -> list[Posting]:
        return [Posting(self.ids[name], signed) for name, signed in postings.items()]

    def _entry(self, postings: dict[str, int]) -> object:
        """Record a transfer if the model allows it; check the refusal if not."""
        expected = self.model.refusals(postings)
        try:
            entry = self.db.run(lambda c: self.ledger.transfer(c, self._postings(postings)))
        except (errors.AccountFrozen, errors.InsufficientFunds) as exc:
            assert type(exc) in expected, (postings, exc, expected)
            event(f"entry refused: {exc.code}")
            return multiple()
        assert not expected, (postings, expected)
        self.model.record(entry.id, postings, is_reversal=False)
        event("entry recorded")
        return entry.id

    # -- journal entries --

    @rule(target=entries, wallet=st.sampled_from(PAYERS), amount=st.integers(1, 20_000))
    def top_up(self, wallet: str, amount: int) -> object:
        return self._entry({"bank": amount, wallet: -amount})

    @rule(
        target=entries,
        src=st.sampled_from(PAYEES),
        dst=st.sampled_from(PAYEES),
        amount=st.integers(1, 25_000),
    )
    def transfer(self, src: str, dst: str, amount: int) -> object:
        if src == dst:
            return multiple()
        return self._entry({src: amount, dst: -amount})

    @rule(
        target=entries,
        src=st.sampled_from(PAYERS),
        legs=st.dictionaries(st.sampled_from(PAYEES), st.integers(1, 8_000), min_size=1),
        fee=st.integers(1, 300),
    )
    def multi_leg(self, src: str, legs: dict[str, int], fee: int) -> object:
        legs.pop(src, None)
        if not legs:
            return multiple()
        total = sum(legs.values()) + fee
        return self._entry({src: total, **{d: -a for d, a in legs.items()}, "fee": -fee})

    @rule(target=entries, entry=consumes(entries))
    def reverse(self, entry: str) -> object:
        original = self.model.entries[entry]
        negated = {name: -signed for name, signed in original.postings.items()}
        expected: set[Refusal]
        if original.is_reversal:
            expected = {errors.InvalidRequest}
        elif original.reversed:
            expected = {errors.AlreadyReversed}
        else:
            expected = self.model.refusals(negated)
        try:
            reversal = self.db.run(lambda c: self.ledger.reverse(c, entry, description="undo"))
        except (
            errors.InvalidRequest,
            errors.AlreadyReversed,
            errors.AccountFrozen,
            errors.InsufficientFunds,
        ) as exc:
            assert type(exc) in expected, (entry, exc, expected)
            event(f"reversal refused: {exc.code}")
            # a refused reversal can be tried again later (unless it is final)
            return entry
        assert not expected, (entry, expected)
        got = {self.names[p.account_id]: p.amount for p in reversal.postings}
        assert got == negated  # L8
        original.reversed = True
        event("entry reversed")
        self.model.record(reversal.id, negated, is_reversal=True)
        # keep both in play: reversing either again must be refused
        return multiple(entry, reversal.id)

    # -- holds --

    @rule(
        target=holds,
        pair=st.sampled_from(HOLD_PAIRS),
        amount=st.integers(1, 12_000),
        minutes=st.integers(5, 180),
    )
    def create_hold(self, pair: tuple[str, str], amount: int, minutes: int) -> object:
        debit, credit = pair
        expires_at = self.clock.now() + timedelta(minutes=minutes)
        expected = self.model.refusals({debit: amount, credit: -amount})
        try:
            hold = self.db.run(
                lambda c: self.ledger.create_hold(
                    c,
                    debit_account_id=self.ids[debit],
                    credit_account_id=self.ids[credit],
                    amount=amount,
                    expires_at=expires_at,
                )
            )
        except (errors.AccountFrozen, errors.InsufficientFunds) as exc:
            assert type(exc) in expected, (debit, credit, amount, exc, expected)
            event(f"hold refused: {exc.code}")
            return multiple()
        assert not expected, (debit, credit, amount, expected)
        assert hold.state is HoldState.PENDING
        model_hold = ModelHold(debit, credit, amount, expires_at)
        self.model.holds[hold.id] = model_hold
        self.model.reserve(model_hold)
        event("hold created")
        return hold.id

    @rule(
        target=holds,
        pair=st.sampled_from(HOLD_PAIRS),
        amount=st.integers(1, 3_000),
        minutes=st.integers(5, 180),
    )
    def create_small_hold(self, pair: tuple[str, str], amount: int, minutes: int) -> object:
        """The same again, small: holds should be frequent and mostly succeed."""
        return self.create_hold(pair, amount, minutes)

    @rule(
        target=entries,
        hold=holds,
        how=st.sampled_from(["full", "part", "over", "zero"]),
        part=st.integers(1, 20_000),
    )
    def post_hold(self, hold: str, how: str, part: int) -> object:
        h = self.model.holds[hold]
        amount = {
            "full": None,
            "part": 1 + (part - 1) % h.amount,
            "over": h.amount + part,
            "zero": 0,
        }[how]
        expected: Refusal | None = None
        if h.state is not HoldState.PENDING:
            expected = errors.HoldNotPending
        elif h.expires_at <= self.clock.now():
            expected = errors.HoldExpired
        elif amount == 0:
            expected = errors.InvalidAmount
        elif amount is not None and amount > h.amount:
            expected = errors.HoldAmountExceeded
        elif self.model.accounts[h.debit].frozen:
            expected = errors.AccountFrozen
        try:
            entry = self.db.run(lambda c: self.ledger.post_hold(c, hold, amount=amount))
        except errors.TongbaoError as exc:
            assert expected is not None and isinstance(exc, expected), (how, exc, expected)
            event(f"post refused: {exc.code}")
            return multiple()
        assert expected is None, (how, expected)
        posted = h.amount if amount is None else amount
        assert posted <= h.amount  # L7
        self.model.release(h, HoldState.POSTED)
        postings = {h.debit: posted, h.credit: -posted}
        assert {self.names[p.account_id]: p.amount for p in entry.postings} == postings
        self.model.record(entry.id, postings, is_reversal=False)
        event(f"hold posted ({how})")
        stored = self.db.read(lambda c: self.ledger.hold(c, hold))
        assert (stored.state, stored.posted_amount, stored.posted_entry_id) == (
            HoldState.POSTED,
            posted,
            entry.id,
        )
        return entry.id

    def _pending(self) -> list[str]:
        return sorted(i for i, h in self.model.holds.items() if h.state is HoldState.PENDING)

    @precondition(lambda self: bool(self._pending()))
    @rule(
        target=entries,
        data=st.data(),
        how=st.sampled_from(["full", "part", "part"]),
        part=st.integers(1, 20_000),
    )
    def post_pending_hold(self, data: st.DataObject, how: str, part: int) -> object:
        """Most holds drawn from the bundle are resolved already; post a live one."""
        hold = data.draw(st.sampled_from(self._pending()), label="pending hold")
        return self.post_hold(hold, how, part)

    @rule(hold=holds)
    def void_hold(self, hold: str) -> None:
        h = self.model.holds[hold]
        try:
            voided = self.db.run(lambda c: self.ledger.void_hold(c, hold))
        except errors.HoldNotPending:
            assert h.state is not HoldState.PENDING
            return
        # allowed while pending, even on a frozen account and even past its expiry
        assert h.state is HoldState.PENDING
        self.model.release(h, HoldState.VOIDED)
        assert voided.state is HoldState.VOIDED
        event("hold voided")

    @rule(minutes=st.integers(1, 45))
    def advance_clock(self, minutes: int) -> None:
        """Time passes; holds whose time is up stay pending until the sweep."""
        self.clock.advance(timedelta(minutes=minutes))

    @rule()
    def expire_due_holds(self) -> None:
        """What the expiry sweeper does."""
        now = self.clock.now()
        due = {
            hold_id
            for hold_id, h in self.model.holds.items()
            if h.state is HoldState.PENDING and h.expires_at <= now
        }
        # the database is shared with other examples: look at our holds only
        found = set(self.db.read(self.ledger.due_holds)) & set(self.model.holds)
        assert found == due
        for hold_id in sorted(due):
            expired = self.db.run(lambda c, h=hold_id: self.ledger.expire_hold(c, h))
            assert expired.state is HoldState.EXPIRED
            self.model.release(self.model.holds[hold_id], HoldState.EXPIRED)
            event("hold expired")
        # a pending hold whose time is not up cannot be expired
        for hold_id, h in self.model.holds.items():
            if h.state is HoldState.PENDING:
                with pytest.raises(errors.InvalidRequest):
                    self.db.run(lambda c, h=hold_id: self.ledger.expire_hold(c, h))
                break

    # -- account status --

    def _frozen(self) -> list[str]:
        return [name for name, account in self.model.accounts.items() if account.frozen]

    @precondition(lambda self: not self._frozen())  # one at a time, or little else happens
    @rule(account=st.sampled_from(FREEZABLE))
    def freeze(self, account: str) -> None:
        updated = self.db.run(
            lambda c: self.ledger.set_status(c, self.ids[account], AccountStatus.FROZEN)
        )
        assert updated.status is AccountStatus.FROZEN
        self.model.accounts[account].frozen = True

    @precondition(lambda self: bool(self._frozen()))
    @rule()
    def unfreeze(self) -> None:
        (account,) = self._frozen()
        updated = self.db.run(
            lambda c: self.ledger.set_status(c, self.ids[account], AccountStatus.OPEN)
        )
        assert updated.status is AccountStatus.OPEN
        self.model.accounts[account].frozen = False

    # -- checks --

    @invariant()
    def balances_match_the_model(self) -> None:
        ids = list(self.ids.values())

        def read(conn: Connection) -> tuple[dict[str, AccountBalance], int, int]:
            p, h = lt.postings, lt.holds
            balances = self.ledger.balances(conn, ids)
            entries = conn.execute(
                select(func.count(func.distinct(p.c.entry_id))).where(p.c.account_id.in_(ids))
            ).scalar_one()
            holds = conn.execute(
                select(func.count()).select_from(h).where(h.c.debit_account_id.in_(ids))
            ).scalar_one()
            return balances, int(entries), int(holds)

        balances, entries, holds = self.db.read(read)
        for name, account in self.model.accounts.items():
            b = balances[self.ids[name]]
            got = (b.ledger, b.held, b.available, b.incoming)
            want = (account.ledger, account.held, account.available, account.incoming)
            assert got == want, (name, got, want)
            if account.no_overdraft:
                assert b.available >= 0  # L5
        # nothing refused left a record behind
        assert (entries, holds) == (len(self.model.entries), len(self.model.holds))

    def teardown(self) -> None:
        try:
            for hold_id, h in self.model.holds.items():
                if h.state is HoldState.PENDING:
                    self.db.run(lambda c, i=hold_id: self.ledger.void_hold(c, i))
                    self.model.release(h, HoldState.VOIDED)
            self.balances_match_the_model()
            ids = list(self.ids.values())
            p = lt.postings
            total = self.db.read(
                lambda c: c.execute(
                    select(func.coalesce(func.sum(p.c.amount), 0)).where(p.c.account_id.in_(ids))
                ).scalar_one()
            )
            assert total == 0  # L2 for this example's accounts
            report = self.db.read(verify_ledger)
            assert not set(report.discrepancies) - self.known, report.discrepancies
        finally:
            super().teardown()


def test_ledger_behaves_like_the_model(db: Database) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(db),
        settings=settings(
            max_examples=20,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
