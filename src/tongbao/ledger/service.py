"""The ledger's public service: accounts, journal entries, holds, queries.

Every method takes the caller's open ``Connection`` so a capability can
combine ledger changes with its own rows in one atomic transaction (and the
caller's :meth:`Database.run` retries the whole thing). Nothing here commits.

Balance changes go through :meth:`Ledger._apply`, one conditional UPDATE per
touched balance row, in ascending account order (see
:mod:`tongbao.storage.database` for why that is safe under concurrency).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    Connection,
    RowMapping,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tongbao import errors
from tongbao.clock import Clock
from tongbao.ids import new_id
from tongbao.ledger import tables as t
from tongbao.ledger.model import (
    Account,
    AccountBalance,
    AccountStatus,
    AccountType,
    Balance,
    EntryKind,
    Hold,
    HoldState,
    JournalEntry,
    Posting,
    amount_to_post,
    check_hold_open,
    check_postings,
    is_outflow,
    posting_delta,
    reversal_postings,
    rules_for,
    view,
)
from tongbao.money import CURRENCY, format_yuan
from tongbao.pagination import Page, check_limit, page_of

if TYPE_CHECKING:
    from tongbao.ledger.batch import BatchResult, BatchTransfer
from tongbao.ledger import statements
from tongbao.storage.prepared import Prepared

_b = t.balances

_INSERT_HOLD = Prepared(insert(t.holds))
_RESOLVE_HOLD = Prepared(
    update(t.holds)
    .where(
        t.holds.c.debit_account_id == bindparam("p_account"),
        t.holds.c.id == bindparam("p_id"),
        t.holds.c.state == literal_column("'pending'"),
    )
    .values(
        state=bindparam("p_state"),
        resolved_at=bindparam("p_now"),
        posted_amount=bindparam("p_posted"),
        posted_entry_id=bindparam("p_entry"),
    )
)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One posting on an account, as a customer statement shows it."""

    entry_id: str
    account_id: str
    amount: int
    balance_after: int | None
    kind: EntryKind
    reference: str | None
    description: str
    created_at: datetime


class Ledger:
    """Double-entry ledger on SQLAlchemy Core."""

    def __init__(self, clock: Clock, *, buckets: int = 16, max_amount_fen: int) -> None:
        self.clock = clock
        self.buckets = buckets
        self.max_amount_fen = max_amount_fen
        # Immutable account attributes (type, currency, buckets) never change,
        # so the hot path need not read them again; status is never cached.
        self._accounts: dict[str, Account] = {}
        self._codes: dict[str, str] = {}
        self._cache_lock = threading.Lock()

    # --- accounts ----------------------------------------------------------------

    def open_account(
        self,
        conn: Connection,
        account_type: AccountType,
        *,
        name: str,
        owner_id: str | None = None,
        code: str | None = None,
        currency: str = CURRENCY,
    ) -> Account:
        rules = rules_for(account_type)
        account = Account(
            id=new_id("acct"),
            type=account_type,
            currency=currency,
            status=AccountStatus.OPEN,
            name=name,
            owner_id=owner_id,
            code=code,
            buckets=self.buckets if rules.bucketed else 1,
            created_at=self.clock.now(),
        )
        conn.execute(
            insert(t.accounts),
            {
                "id": account.id,
                "code": code,
                "type": account_type.value,
                "currency": currency,
                "owner_id": owner_id,
                "name": name,
                "status": account.status.value,
                "buckets": account.buckets,
                "created_at": account.created_at,
            },
        )
        conn.execute(
            insert(_b),
            [
                {
                    "account_id": account.id,
                    "bucket": bucket,
                    "currency": currency,
                    "normal_side": rules.normal.value,
                    "no_overdraft": rules.no_overdraft,
                    "status": account.status.value,
                    "debits_posted": 0,
                    "credits_posted": 0,
                    "debits_pending": 0,
                    "credits_pending": 0,
                }
                for bucket in range(account.buckets)
            ],
        )
        return account

    def internal_account(
        self, conn: Connection, account_type: AccountType, code: str, *, name: str
    ) -> Account:
        """Get or open the internal account with this unique ``code``.

        Run it in a transaction of its own (platform start-up does): an account
        opened here is remembered by code only once it is found committed.
        """
        row = conn.execute(select(t.accounts).where(t.accounts.c.code == code)).first()
        if row is not None:
            account = _account(row._mapping)
        else:
            try:
                with conn.begin_nested():
                    account = self.open_account(conn, account_type, name=name, code=code)
            except IntegrityError:  # opened concurrently by another transaction
                row = conn.execute(select(t.accounts).where(t.accounts.c.code == code)).one()
                account = _account(row._mapping)
        if account.type is not account_type:
            raise errors.ConfigurationError(f"account code {code} is a {account.type}")
        return account

    def account_id_by_code(self, conn: Connection, code: str) -> str:
        """The id of an existing internal account; cached, since codes never move."""
        with self._cache_lock:
            cached = self._codes.get(code)
        if cached is not None:
            return cached
        account_id = conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.code == code)
        ).scalar_one_or_none()
        if account_id is None:
            raise errors.ConfigurationError(
                f"internal account {code!r} does not exist; start the platform first"
            )
        with self._cache_lock:
            self._codes[code] = account_id
        return str(account_id)

    def account(self, conn: Connection, account_id: str) -> Account:
        """The account with its *current* status."""
        row = conn.execute(select(t.accounts).where(t.accounts.c.id == account_id)).first()
        if row is None:
            raise errors.AccountNotFound(f"no account {account_id}")
        return _account(row._mapping)

    def accounts_of(self, conn: Connection, owner_id: str) -> list[Account]:
        rows = conn.execute(
            select(t.accounts).where(t.accounts.c.owner_id == owner_id).order_by(t.accounts.c.id)
        )
        return [_account(r._mapping) for r in rows]

    def static_accounts(self, conn: Connection, account_ids: Iterable[str]) -> dict[str, Account]:
        """Accounts by id, from cache or database. Only the immutable attributes
        (type, currency, buckets) are current; never trust ``status`` from here."""
        found: dict[str, Account] = {}
        missing: list[str] = []
        with self._cache_lock:
            for account_id in account_ids:
                cached = self._accounts.get(account_id)
                if cached is None:
                    missing.append(account_id)
                else:
                    found[account_id] = cached
        if missing:
            rows = conn.execute(select(t.accounts).where(t.accounts.c.id.in_(missing)))
            loaded = {r.id: _account(r._mapping) for r in rows}
            for account_id in missing:
                if account_id not in loaded:
                    raise errors.AccountNotFound(f"no account {account_id}")
            with self._cache_lock:
                if len(self._accounts) > 100_000:
                    self._accounts.clear()
                self._accounts.update(loaded)
            found.update(loaded)
        return found

    def set_status(self, conn: Connection, account_id: str, status: AccountStatus) -> Account:
        """Freeze, unfreeze or close an account. Closing is final and needs a zero balance."""
        account = self.account(conn, account_id)
        if account.status is AccountStatus.CLOSED:
            raise errors.AccountClosed(f"account {account_id} is closed")
        # Lock every balance row first: in-flight transfers on this account
        # finish before the status changes, later ones see the new status.
        rows = conn.execute(select(_b).where(_b.c.account_id == account_id).with_for_update()).all()
        if status is AccountStatus.CLOSED:
            total = sum((_counters(r._mapping) for r in rows), Balance())
            ledger, held, _, incoming = view(total, account.rules.normal)
            if ledger or held or incoming:
                raise errors.AccountNotEmpty(
                    f"account {account_id} has balance {format_yuan(ledger)}, held "
                    f"{format_yuan(held)}, incoming {format_yuan(incoming)}; empty it first"
                )
        conn.execute(
            update(t.accounts).where(t.accounts.c.id == account_id).values(status=status.value)
        )
        conn.execute(update(_b).where(_b.c.account_id == account_id).values(status=status.value))
        return self.account(conn, account_id)

    # --- balances ------------------------------------------------------------------

    def balance(self, conn: Connection, account_id: str) -> AccountBalance:
        return self.balances(conn, [account_id])[account_id]

    def balances(self, conn: Connection, account_ids: Sequence[str]) -> dict[str, AccountBalance]:
        accounts = self.static_accounts(conn, account_ids)
        rows = conn.execute(
            select(
                _b.c.account_id,
                func.sum(_b.c.debits_posted),
                func.sum(_b.c.credits_posted),
                func.sum(_b.c.debits_pending),
                func.sum(_b.c.credits_pending),
            )
            .where(_b.c.account_id.in_(list(account_ids)))
            .group_by(_b.c.account_id)
        )
        result = {}
        for account_id, dp, cp, dpe, cpe in rows:
            balance = Balance(int(dp), int(cp), int(dpe), int(cpe))
            result[account_id] = AccountBalance.of(accounts[account_id], balance)
        return result

    # --- journal entries -------------------------------------------------------------

    def post_batch(self, conn: Connection, transfers: Sequence[BatchTransfer]) -> list[BatchResult]:
        """Post many two-account transfers in one transaction; see :mod:`.batch`."""
        from tongbao.ledger.batch import post_batch  # noqa: PLC0415 - batch imports us

        return post_batch(self, conn, transfers)

    def transfer(
        self,
        conn: Connection,
        postings: Sequence[Posting],
        *,
        reference: str | None = None,
        description: str = "",
        currency: str = CURRENCY,
    ) -> JournalEntry:
        """Record a balanced journal entry and apply it to the balances."""
        return self._record(
            conn,
            postings,
            kind=EntryKind.TRANSFER,
            reference=reference,
            description=description,
            currency=currency,
        )

    def reverse(self, conn: Connection, entry_id: str, *, description: str) -> JournalEntry:
        """Undo an entry with its exact negation (L8). An entry is reversed at most once."""
        # Lock the original first: a concurrent reversal of the same entry then
        # waits here and, once the first commits, sees it below.
        locked = conn.execute(
            select(t.entries.c.id).where(t.entries.c.id == entry_id).with_for_update()
        ).first()
        if locked is None:
            raise errors.EntryNotFound(f"no journal entry {entry_id}")
        original = self.entry(conn, entry_id)
        if original.kind is EntryKind.REVERSAL:
            raise errors.InvalidRequest(f"{entry_id} is itself a reversal; post a new entry")
        already = conn.execute(
            select(t.entries.c.id).where(t.entries.c.reverses_entry_id == entry_id)
        ).first()
        if already is not None:
            raise errors.AlreadyReversed(f"{entry_id} was reversed by {already.id}")
        return self._record(
            conn,
            reversal_postings(original.postings),
            kind=EntryKind.REVERSAL,
            reference=original.reference,
            description=description,
            currency=original.currency,
            reverses_entry_id=entry_id,
        )

    def entry(self, conn: Connection, entry_id: str) -> JournalEntry:
        row = conn.execute(select(t.entries).where(t.entries.c.id == entry_id)).first()
        if row is None:
            raise errors.EntryNotFound(f"no journal entry {entry_id}")
        lines = conn.execute(
            select(t.postings.c.account_id, t.postings.c.amount)
            .where(t.postings.c.entry_id == entry_id)
            .order_by(t.postings.c.amount.desc(), t.postings.c.account_id)
        )
        return _entry(row._mapping, tuple(Posting(a, amt) for a, amt in lines))

    def entries_for(self, conn: Connection, reference: str) -> list[JournalEntry]:
        """Every entry recorded for a business object (a payment id, say), oldest first."""
        ids = conn.execute(
            select(t.entries.c.id)
            .where(t.entries.c.reference == reference)
            .order_by(t.entries.c.id)
        ).scalars()
        return [self.entry(conn, entry_id) for entry_id in ids]

    def net_movements(self, conn: Connection) -> dict[str, dict[str, int]]:
        """Per business reference, the net signed posting (debit positive) on each
        account, over all entries carrying that reference. Zero nets are left out."""
        p, e = t.postings, t.entries
        rows = conn.execute(
            select(e.c.reference, p.c.account_id, func.sum(p.c.amount))
            .join(e, e.c.id == p.c.entry_id)
            .where(e.c.reference.is_not(None))
            .group_by(e.c.reference, p.c.account_id)
        )
        nets: dict[str, dict[str, int]] = {}
        for reference, account_id, total in rows:
            if int(total):
                nets.setdefault(reference, {})[account_id] = int(total)
        return nets

    def statement(
        self, conn: Connection, account_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> Page[StatementLine]:
        """Postings on an account, newest first."""
        check_limit(limit)
        p, e = t.postings, t.entries
        query = (
            select(
                p.c.entry_id,
                p.c.account_id,
                p.c.amount,
                p.c.balance_after,
                e.c.kind,
                e.c.reference,
                e.c.description,
                p.c.created_at,
            )
            .join(e, e.c.id == p.c.entry_id)
            .where(p.c.account_id == account_id)
            .order_by(p.c.entry_id.desc())
            .limit(limit + 1)
        )
        if cursor:
            query = query.where(p.c.entry_id < cursor)
        lines = [
            StatementLine(r[0], r[1], r[2], r[3], EntryKind(r[4]), r[5], r[6], r[7])
            for r in conn.execute(query)
        ]
        return page_of(lines, limit, lambda line: line.entry_id)

    # --- holds -------------------------------------------------------------------------

    def create_hold(
        self,
        conn: Connection,
        *,
        debit_account_id: str,
        credit_account_id: str,
        amount: int,
        expires_at: datetime,
        reference: str | None = None,
    ) -> Hold:
        """Reserve ``amount`` on the debit account for a later post or void."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise errors.InvalidAmount("a hold's amount must be a positive integer (fen)")
        check_postings(
            [Posting.debit(debit_account_id, amount), Posting.credit(credit_account_id, amount)]
        )
        self._check_maximum(amount)
        now = self.clock.now()
        if expires_at <= now:
            raise errors.ValidationFailed("a hold must expire in the future")
        accounts = self.static_accounts(conn, [debit_account_id, credit_account_id])
        _same_currency(accounts.values(), accounts[debit_account_id].currency)
        debit, credit = accounts[debit_account_id], accounts[credit_account_id]
        hold = Hold(
            id=new_id("hold"),
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            state=HoldState.PENDING,
            expires_at=expires_at,
            created_at=now,
            reference=reference,
            debit_bucket=self.pick_bucket(debit),
            credit_bucket=self.pick_bucket(credit),
        )
        self._apply_pair(
            conn,
            (debit, hold.debit_bucket, Balance(debits_pending=amount), amount),
            (credit, hold.credit_bucket, Balance(credits_pending=amount), -amount),
        )
        _INSERT_HOLD.run(
            conn,
            {
                "id": hold.id,
                "debit_account_id": hold.debit_account_id,
                "credit_account_id": hold.credit_account_id,
                "amount": amount,
                "debit_bucket": hold.debit_bucket,
                "credit_bucket": hold.credit_bucket,
                "state": hold.state.value,
                "reference": reference,
                "expires_at": expires_at,
                "created_at": now,
                "resolved_at": None,
                "posted_amount": None,
                "posted_entry_id": None,
            },
        )
        return hold

    def hold(self, conn: Connection, hold_id: str, *, for_update: bool = False) -> Hold:
        query = select(t.holds).where(t.holds.c.id == hold_id)
        if for_update:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise errors.HoldNotFound(f"no hold {hold_id}")
        return _hold(row._mapping)

    def post_hold(
        self,
        conn: Connection,
        hold_id: str,
        *,
        amount: int | None = None,
        description: str = "",
    ) -> JournalEntry:
        """Post ``amount`` (default: all) of a pending hold; the rest is released."""
        hold = self.hold(conn, hold_id, for_update=True)
        check_hold_open(hold, self.clock.now())
        posted = amount_to_post(hold, amount)
        accounts = self.static_accounts(conn, [hold.debit_account_id, hold.credit_account_id])
        after = self._apply_pair(
            conn,
            (
                accounts[hold.debit_account_id],
                hold.debit_bucket,
                Balance(debits_posted=posted, debits_pending=-hold.amount),
                posted,
            ),
            (
                accounts[hold.credit_account_id],
                hold.credit_bucket,
                Balance(credits_posted=posted, credits_pending=-hold.amount),
                -posted,
            ),
        )
        # The id is minted only now, under the balance row locks, so entry order
        # (and statements) agree with the order balances changed in.
        entry_id = new_id("je")
        self._resolve(conn, hold, HoldState.POSTED, posted_amount=posted, entry_id=entry_id)
        entry = JournalEntry(
            id=entry_id,
            kind=EntryKind.HOLD_POSTING,
            currency=accounts[hold.debit_account_id].currency,
            postings=(
                Posting.debit(hold.debit_account_id, posted),
                Posting.credit(hold.credit_account_id, posted),
            ),
            reference=hold.reference,
            description=description,
            created_at=self.clock.now(),
            hold_id=hold.id,
        )
        self._insert_entry(conn, entry, after)
        return entry

    def void_hold(self, conn: Connection, hold_id: str) -> Hold:
        """Release a pending hold in full."""
        hold = self.hold(conn, hold_id, for_update=True)
        if hold.state is not HoldState.PENDING:
            raise errors.HoldNotPending(f"hold {hold.id} is already {hold.state}")
        return self._release(conn, hold, HoldState.VOIDED)

    def expire_hold(self, conn: Connection, hold_id: str) -> Hold:
        """Expire one pending hold whose time is up."""
        hold = self.hold(conn, hold_id, for_update=True)
        if hold.state is not HoldState.PENDING:
            raise errors.HoldNotPending(f"hold {hold.id} is already {hold.state}")
        if hold.expires_at > self.clock.now():
            raise errors.InvalidRequest(f"hold {hold.id} has not expired yet")
        return self._release(conn, hold, HoldState.EXPIRED)

    def due_holds(self, conn: Connection, *, limit: int = 500) -> list[str]:
        """Ids of pending holds whose time is up (for the expiry sweeper)."""
        h = t.holds
        return list(
            conn.execute(
                select(h.c.id)
                .where(h.c.state == HoldState.PENDING.value, h.c.expires_at <= self.clock.now())
                .order_by(h.c.expires_at)
                .limit(limit)
            ).scalars()
        )

    def _release(self, conn: Connection, hold: Hold, state: HoldState) -> Hold:
        self._resolve(conn, hold, state)
        accounts = self.static_accounts(conn, [hold.debit_account_id, hold.credit_account_id])
        # Releasing never takes money out, so it is allowed on frozen accounts.
        self._apply_pair(
            conn,
            (
                accounts[hold.debit_account_id],
                hold.debit_bucket,
                Balance(debits_pending=-hold.amount),
                None,
            ),
            (
                accounts[hold.credit_account_id],
                hold.credit_bucket,
                Balance(credits_pending=-hold.amount),
                None,
            ),
        )
        return self.hold(conn, hold.id)

    def _resolve(
        self,
        conn: Connection,
        hold: Hold,
        state: HoldState,
        *,
        posted_amount: int | None = None,
        entry_id: str | None = None,
    ) -> None:
        result = _RESOLVE_HOLD.run(
            conn,
            {
                "p_account": hold.debit_account_id,
                "p_id": hold.id,
                "p_state": state.value,
                "p_now": self.clock.now(),
                "p_posted": posted_amount,
                "p_entry": entry_id,
            },
        )
        if result.rowcount != 1:
            raise errors.HoldNotPending(f"hold {hold.id} was resolved concurrently")

    # --- internals -------------------------------------------------------------------

    def _check_maximum(self, amount: int) -> None:
        if amount > self.max_amount_fen:
            raise errors.AmountTooLarge(
                f"{format_yuan(amount)} is above the maximum {format_yuan(self.max_amount_fen)}"
            )

    def pick_bucket(self, account: Account) -> int:
        """Which balance row a change to ``account`` goes to (random for busy
        internal accounts, so concurrent payments do not queue on one row)."""
        return random.randrange(account.buckets) if account.buckets > 1 else 0  # noqa: S311

    def _record(
        self,
        conn: Connection,
        postings: Sequence[Posting],
        *,
        kind: EntryKind,
        reference: str | None,
        description: str,
        currency: str,
        reverses_entry_id: str | None = None,
    ) -> JournalEntry:
        check_postings(postings)
        for posting in postings:
            self._check_maximum(abs(posting.amount))
        accounts = self.static_accounts(conn, [p.account_id for p in postings])
        _same_currency(accounts.values(), currency)
        after = self._apply_pair(
            conn,
            *(
                (
                    accounts[p.account_id],
                    self.pick_bucket(accounts[p.account_id]),
                    posting_delta(p.amount),
                    p.amount,
                )
                for p in postings
            ),
        )
        entry = JournalEntry(
            id=new_id("je"),
            kind=kind,
            currency=currency,
            postings=tuple(postings),
            reference=reference,
            description=description,
            created_at=self.clock.now(),
            reverses_entry_id=reverses_entry_id,
        )
        self._insert_entry(conn, entry, after)
        return entry

    def _apply_pair(
        self,
        conn: Connection,
        *changes: tuple[Account, int, Balance, int | None],
    ) -> dict[str, int | None]:
        """Apply balance changes, in account order, in one statement; return the
        ledger balances after. ``signed`` (the last item) is the amount as a
        posting (debit positive) to tell outflows, ``None`` for releases."""
        ordered = sorted(changes, key=lambda c: c[0].id)
        rows = statements.apply_changes(
            conn,
            [
                {
                    "a": account.id,
                    "k": bucket,
                    # Releases and inflows are allowed on a frozen account; outflows not.
                    "f": 0
                    if signed is not None and is_outflow(signed, account.rules.normal)
                    else 1,
                    "dd": delta.debits_posted,
                    "cd": delta.credits_posted,
                    "dpe": delta.debits_pending,
                    "cpe": delta.credits_pending,
                }
                for account, bucket, delta, signed in ordered
            ],
        )
        after: dict[str, int | None] = {}
        for account, bucket, delta, _ in ordered:
            row = rows.get(account.id)
            if row is None:
                raise self._refusal(conn, account, bucket, delta)
            after[account.id] = _single_bucket_ledger(account, Balance(*row))
        return after

    def _refusal(
        self, conn: Connection, account: Account, bucket: int, delta: Balance
    ) -> errors.TongbaoError:
        """Explain why a balance update matched no row."""
        row = conn.execute(
            select(_b.c.status).where(_b.c.account_id == account.id, _b.c.bucket == bucket)
        ).first()
        if row is None:
            return errors.AccountNotFound(f"no account {account.id}")
        if row.status == AccountStatus.CLOSED.value:
            return errors.AccountClosed(f"account {account.id} is closed")
        if row.status == AccountStatus.FROZEN.value:
            return errors.AccountFrozen(f"account {account.id} is frozen; no money may leave it")
        available = self.balance(conn, account.id).available
        needed = max(
            delta.debits_posted + delta.debits_pending, delta.credits_posted + delta.credits_pending
        )
        return errors.InsufficientFunds(
            f"account {account.id} has {format_yuan(available)} available, "
            f"{format_yuan(needed)} needed",
            available_fen=available,
        )

    def _insert_entry(
        self, conn: Connection, entry: JournalEntry, after: dict[str, int | None]
    ) -> None:
        statements.insert_entry(
            conn,
            {
                "id": entry.id,
                "kind": entry.kind.value,
                "currency": entry.currency,
                "reference": entry.reference,
                "description": entry.description[:200],
                "reverses_entry_id": entry.reverses_entry_id,
                "hold_id": entry.hold_id,
                "created_at": entry.created_at,
            },
            [
                {
                    "account_id": p.account_id,
                    "entry_id": entry.id,
                    "amount": p.amount,
                    "balance_after": after.get(p.account_id),
                    "created_at": entry.created_at,
                }
                for p in entry.postings
            ],
        )


def _same_currency(accounts: Iterable[Account], currency: str) -> None:
    for account in accounts:
        if account.currency != currency:
            raise errors.CurrencyMismatch(
                f"account {account.id} is in {account.currency}, the entry in {currency}"
            )


def _single_bucket_ledger(account: Account, row: Balance) -> int | None:
    return view(row, account.rules.normal)[0] if account.buckets == 1 else None


def _counters(m: RowMapping) -> Balance:
    return Balance(
        m["debits_posted"], m["credits_posted"], m["debits_pending"], m["credits_pending"]
    )


def _account(r: RowMapping) -> Account:
    return Account(
        id=r["id"],
        type=AccountType(r["type"]),
        currency=r["currency"],
        status=AccountStatus(r["status"]),
        name=r["name"],
        owner_id=r["owner_id"],
        code=r["code"],
        buckets=r["buckets"],
        created_at=r["created_at"],
    )


def _entry(r: RowMapping, postings: tuple[Posting, ...]) -> JournalEntry:
    return JournalEntry(
        id=r["id"],
        kind=EntryKind(r["kind"]),
        currency=r["currency"],
        postings=postings,
        reference=r["reference"],
        description=r["description"],
        created_at=r["created_at"],
        reverses_entry_id=r["reverses_entry_id"],
        hold_id=r["hold_id"],
    )


def _hold(r: RowMapping) -> Hold:
    return Hold(
        id=r["id"],
        debit_account_id=r["debit_account_id"],
        credit_account_id=r["credit_account_id"],
        amount=r["amount"],
        state=HoldState(r["state"]),
        expires_at=r["expires_at"],
        created_at=r["created_at"],
        reference=r["reference"],
        debit_bucket=r["debit_bucket"],
        credit_bucket=r["credit_bucket"],
        resolved_at=r["resolved_at"],
        posted_amount=r["posted_amount"],
        posted_entry_id=r["posted_entry_id"],
    )
