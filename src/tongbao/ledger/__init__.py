"""Double-entry ledger: accounts, balanced journal entries, holds, verification.

Public API: :class:`Ledger` (the service), the value types in
:mod:`tongbao.ledger.model` and :func:`verify_ledger`. Other capabilities use
only these, never the tables.
"""

from tongbao.ledger.model import (
    Account,
    AccountBalance,
    AccountStatus,
    AccountType,
    EntryKind,
    Hold,
    HoldState,
    JournalEntry,
    Posting,
    transfer_postings,
)
from tongbao.ledger.service import Ledger, StatementLine
from tongbao.ledger.verify import Discrepancy, VerificationReport, verify_ledger

__all__ = [
    "Account",
    "AccountBalance",
    "AccountStatus",
    "AccountType",
    "Discrepancy",
    "EntryKind",
    "Hold",
    "HoldState",
    "JournalEntry",
    "Ledger",
    "Posting",
    "StatementLine",
    "VerificationReport",
    "transfer_postings",
    "verify_ledger",
]
