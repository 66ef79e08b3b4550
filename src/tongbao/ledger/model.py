"""The ledger's data types and pure rules. No I/O here.

Vocabulary (TigerBeetle's, see ``docs/invariants.md``):

* An :class:`Account` has four counters — debits/credits, posted/pending —
  and a *normal side*: liabilities (customer wallets, merchant accounts, fee
  income) grow with credits, assets (money at or owed by banks) with debits.
* A :class:`JournalEntry` is two or more :class:`Posting` s whose signed
  amounts (debit positive, credit negative) sum to zero.
* A :class:`Hold` is a pending two-account transfer: it reserves money on
  the debit account until it is posted (up to its amount), voided or expires.

    >>> rules_for(AccountType.CUSTOMER_WALLET).no_overdraft
    True
    >>> b = Balance(credits_posted=1000, debits_pending=300)
    >>> view(b, Side.CREDIT)
    (1000, 300, 700, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tongbao import errors


class Side(StrEnum):
    DEBIT = "D"
    CREDIT = "C"


class AccountType(StrEnum):
    CUSTOMER_WALLET = "customer_wallet"
    """What the institution owes a customer. Never negative."""
    MERCHANT = "merchant"
    """What the institution owes a merchant. Never negative."""
    BANK_CLEARING = "bank_clearing"
    """Per bank channel: money the bank owes us (debit) or we owe it (credit)
    for instructions not yet settled."""
    BANK_SETTLEMENT = "bank_settlement"
    """Per bank: the reserve (备付金) account we hold at that bank."""
    FEE_INCOME = "fee_income"
    TRANSIT = "transit"
    """Payments in flight between reservation and completion."""
    SUSPENSE = "suspense"
    """Differences awaiting investigation (mis-postings, unmatched lines)."""
    INTERNAL = "internal"
    """Any other internal account (adjustments, write-offs, capital)."""


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    """Money may come in, none may go out (ACC-9)."""
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AccountRules:
    normal: Side
    no_overdraft: bool
    """The balance on the normal side, less pending outflows, may never be negative."""
    bucketed: bool
    """Busy internal accounts spread their counters over several rows."""


_RULES: dict[AccountType, AccountRules] = {
    AccountType.CUSTOMER_WALLET: AccountRules(Side.CREDIT, no_overdraft=True, bucketed=False),
    AccountType.MERCHANT: AccountRules(Side.CREDIT, no_overdraft=True, bucketed=False),
    AccountType.BANK_CLEARING: AccountRules(Side.DEBIT, no_overdraft=False, bucketed=True),
    AccountType.BANK_SETTLEMENT: AccountRules(Side.DEBIT, no_overdraft=False, bucketed=True),
    AccountType.FEE_INCOME: AccountRules(Side.CREDIT, no_overdraft=False, bucketed=True),
    AccountType.TRANSIT: AccountRules(Side.CREDIT, no_overdraft=False, bucketed=True),
    AccountType.SUSPENSE: AccountRules(Side.DEBIT, no_overdraft=False, bucketed=True),
    AccountType.INTERNAL: AccountRules(Side.DEBIT, no_overdraft=False, bucketed=True),
}


def rules_for(account_type: AccountType) -> AccountRules:
    return _RULES[account_type]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    type: AccountType
    currency: str
    status: AccountStatus
    name: str
    owner_id: str | None
    code: str | None
    buckets: int
    created_at: datetime

    @property
    def rules(self) -> AccountRules:
        return rules_for(self.type)


@dataclass(frozen=True, slots=True)
class Balance:
    """The four counters of an account (or of one of its bucket rows)."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def __add__(self, other: Balance) -> Balance:
        return Balance(
            self.debits_posted + other.debits_posted,
            self.credits_posted + other.credits_posted,
            self.debits_pending + other.debits_pending,
            self.credits_pending + other.credits_pending,
        )


def view(balance: Balance, normal: Side) -> tuple[int, int, int, int]:
    """``(ledger, held, available, incoming)`` seen from the normal side.

    *ledger* is the posted balance, *held* the pending outflows reserved
    against it, *available* = ledger - held, *incoming* the pending inflows.
    """
    if normal is Side.CREDIT:
        ledger = balance.credits_posted - balance.debits_posted
        held, incoming = balance.debits_pending, balance.credits_pending
    else:
        ledger = balance.debits_posted - balance.credits_posted
        held, incoming = balance.credits_pending, balance.debits_pending
    return ledger, held, ledger - held, incoming


def overdrawn(balance: Balance, rules: AccountRules) -> bool:
    """Whether the counters break the account's no-overdraft rule (invariant L5)."""
    if not rules.no_overdraft:
        return False
    _, _, available, _ = view(balance, rules.normal)
    return available < 0


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: str
    currency: str
    ledger: int
    held: int
    available: int
    incoming: int

    @classmethod
    def of(cls, account: Account, balance: Balance) -> AccountBalance:
        ledger, held, available, incoming = view(balance, account.rules.normal)
        return cls(account.id, account.currency, ledger, held, available, incoming)


@dataclass(frozen=True, slots=True)
class Posting:
    """One line of a journal entry: a signed amount on one account.

    Debits are positive, credits negative, so a balanced entry sums to zero.
    """

    account_id: str
    amount: int

    @classmethod
    def debit(cls, account_id: str, amount: int) -> Posting:
        return cls(account_id, amount)

    @classmethod
    def credit(cls, account_id: str, amount: int) -> Posting:
        return cls(account_id, -amount)


class EntryKind(StrEnum):
    TRANSFER = "transfer"
    HOLD_POSTING = "hold_posting"
    REVERSAL = "reversal"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: str
    kind: EntryKind
    currency: str
    postings: tuple[Posting, ...]
    reference: str | None
    description: str
    created_at: datetime
    reverses_entry_id: str | None = None
    hold_id: str | None = None


def transfer_postings(debit_account_id: str, credit_account_id: str, amount: int) -> list[Posting]:
    """The two postings of a simple transfer ``amount`` from debit to credit account.

    The *debit* account is the one money leaves when it is a wallet (a wallet
    is credit-normal, so a debit lowers it).
    """
    return [Posting.debit(debit_account_id, amount), Posting.credit(credit_account_id, amount)]


def check_postings(postings: Sequence[Posting]) -> None:
    """Invariant L1: two or more postings, none zero, one per account, summing to zero."""
    if len(postings) < 2:
        raise errors.UnbalancedEntry("a journal entry needs at least two postings")
    seen: set[str] = set()
    for posting in postings:
        if isinstance(posting.amount, bool) or not isinstance(posting.amount, int):
            raise errors.InvalidAmount("posting amounts are integer fen")
        if posting.amount == 0:
            raise errors.UnbalancedEntry(f"zero posting on {posting.account_id}")
        if posting.account_id in seen:
            raise errors.UnbalancedEntry(
                f"account {posting.account_id} appears twice; merge its postings"
            )
        seen.add(posting.account_id)
    total = sum(p.amount for p in postings)
    if total != 0:
        raise errors.UnbalancedEntry(f"postings sum to {total} fen, not zero")


def reversal_postings(postings: Iterable[Posting]) -> list[Posting]:
    """Invariant L8: a reversal is the exact negation of the entry it reverses."""
    return [Posting(p.account_id, -p.amount) for p in postings]


def posting_delta(amount: int) -> Balance:
    """The counter change a posted, signed amount makes."""
    return Balance(debits_posted=amount) if amount > 0 else Balance(credits_posted=-amount)


def is_outflow(amount: int, normal: Side) -> bool:
    """Whether a signed amount takes money out of an account with this normal side."""
    return (amount > 0) if normal is Side.CREDIT else (amount < 0)


# --- holds ---------------------------------------------------------------------


class HoldState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    state: HoldState
    expires_at: datetime
    created_at: datetime
    reference: str | None
    debit_bucket: int
    credit_bucket: int
    resolved_at: datetime | None = None
    posted_amount: int | None = None
    posted_entry_id: str | None = None


def check_hold_open(hold: Hold, now: datetime) -> None:
    """Invariant L6: a hold leaves PENDING exactly once. Raises if it already has,
    or if its time is up (the caller then expires it)."""
    if hold.state is not HoldState.PENDING:
        raise errors.HoldNotPending(f"hold {hold.id} is already {hold.state}")
    if hold.expires_at <= now:
        raise errors.HoldExpired(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")


def amount_to_post(hold: Hold, amount: int | None) -> int:
    """How much of a hold to post: all of it by default, never more (L7), never zero."""
    if amount is None:
        return hold.amount
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise errors.InvalidAmount("a posted amount must be a positive integer; void instead")
    if amount > hold.amount:
        raise errors.HoldAmountExceeded(
            f"cannot post {amount} fen from hold {hold.id} of {hold.amount} fen"
        )
    return amount
