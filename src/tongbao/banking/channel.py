"""The bank channel adapter: what the platform needs from a bank, and nothing more.

A real adapter speaks a bank's protocol (ISO 8583 / ISO 20022, PAY-14) over an
encrypted channel; :mod:`tongbao.banking.simulated` is the local
implementation, a bank with its own book. Every instruction goes out signed
by the platform (:class:`SignedInstruction`, made by
:mod:`tongbao.banking.signing`; SEC-12, PAY-6): the bank verifies the
signature against the platform's registered public key, refuses anything
that does not verify, and keeps the signature as proof of what was sent.

The platform talks to banks only through :class:`BankChannel`, outside its
own database transactions (a bank is never part of our transaction), and
makes every call safe to repeat: an instruction carries the platform's id,
and a bank that sees the same id twice answers with the first outcome
instead of moving money again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol


class InstructionDirection(StrEnum):
    DEBIT = "debit"
    """Pull money from the customer's card into our reserve account (top-up)."""
    CREDIT = "credit"
    """Pay money from our reserve account to the customer's card (withdrawal)."""


class InstructionStatus(StrEnum):
    ACCEPTED = "accepted"
    """Taken; a credit settles later. Not final."""
    SETTLED = "settled"
    """Money moved in the bank's book. Final."""
    REJECTED = "rejected"
    """Refused on receipt (no funds, card blocked, agreement cancelled). Final."""
    FAILED = "failed"
    """Accepted first, then failed before settlement (payee account closed). Final."""

    @property
    def final(self) -> bool:
        return self is not InstructionStatus.ACCEPTED


@dataclass(frozen=True, slots=True)
class CardVerification:
    """What a customer gives to bind a card (quick-pay agreement signing)."""

    card_number: str
    holder_name: str
    phone: str
    expires_on: date
    """Last day of the card's validity month."""


@dataclass(frozen=True, slots=True)
class CardAgreement:
    """A signed quick-pay agreement (快捷支付协议): the bank's token for the card."""

    agreement_id: str
    bank_code: str
    card_last4: str


@dataclass(frozen=True, slots=True)
class Instruction:
    id: str
    """The platform's id; repeating an instruction with the same id is harmless."""
    direction: InstructionDirection
    agreement_id: str
    amount: int
    """Fen, always positive."""
    memo: str
    bank_code: str
    """The bank it is addressed to: a bank refuses an instruction meant for another."""


@dataclass(frozen=True, slots=True)
class SignedInstruction:
    """An instruction as it travels: the fields, when the platform signed them, and
    the signature over their canonical encoding
    (:func:`tongbao.banking.signing.canonical_bytes`)."""

    instruction: Instruction
    signed_at: datetime
    """UTC instant of signing, part of what is signed (evidence of when it was sent)."""
    algorithm: str
    """``ed25519``."""
    key_id: str
    """Which platform key signed: 16 hex digits of SHA-256 of the public key."""
    signature: bytes


@dataclass(frozen=True, slots=True)
class InstructionReceipt:
    instruction_id: str
    status: InstructionStatus
    bank_reference: str | None
    reason: str | None = None
    """Why it was rejected or failed (bank's own words)."""
    settles_by: datetime | None = None
    settled_at: datetime | None = None
    signature_rejected: bool = False
    """Rejected because the signature did not verify (altered in transit, wrong or
    unregistered key): nothing was booked and the bank kept no record of it."""


@dataclass(frozen=True, slots=True)
class BankStatementLine:
    """One line of the bank's statement of our reserve account."""

    line_id: str
    value_date: date
    direction: InstructionDirection
    amount: int
    instruction_id: str | None
    bank_reference: str | None
    description: str


class BankChannel(Protocol):
    """One bank, seen from the platform."""

    @property
    def bank_code(self) -> str:
        """Short code of the bank, e.g. ``SIMBANK``; names its ledger accounts."""
        ...

    def sign_agreement(self, request: CardVerification) -> CardAgreement:
        """Verify card, name, phone and expiry with the bank; raise
        :class:`tongbao.errors.BankRejected` with the bank's reason if any is wrong."""
        ...

    def cancel_agreement(self, agreement_id: str) -> None:
        """Cancel a quick-pay agreement (card unbound). Repeating is harmless."""
        ...

    def agreement_active(self, agreement_id: str) -> bool:
        """PAY-2: whether the agreement is signed, not expired and not cancelled."""
        ...

    def submit(self, signed: SignedInstruction) -> InstructionReceipt:
        """Send a signed instruction. One whose signature does not verify is
        rejected (``signature_rejected``) and nothing moves. Otherwise a debit is
        settled or rejected at once; a credit is accepted (settles later) or
        rejected. Same id again: the first outcome."""
        ...

    def status(self, instruction_id: str) -> InstructionReceipt | None:
        """The bank's current view of an instruction; ``None`` if it never arrived."""
        ...

    def statement(self, value_date: date) -> list[BankStatementLine]:
        """The bank's statement of our reserve account for one value date."""
        ...
