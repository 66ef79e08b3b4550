"""Payment orders: kinds, the state machine, fees and failure reasons. Pure.

State machine (``docs/payments.md`` has the diagram)::

    created ─► awaiting_verification ─► under_review ─► processing ─► succeeded
       │                │                     │              │
       └────────────────┴──────► failed / cancelled ◄────────┘

Each step forward may be skipped when it does not apply (no code needed
below the verification threshold, no review below the review threshold);
no step goes back, and the three final states are final.

>>> check_transition(PaymentState.CREATED, PaymentState.PROCESSING)
>>> check_transition(PaymentState.SUCCEEDED, PaymentState.FAILED)
Traceback (most recent call last):
...
tongbao.errors.InvalidTransitionError: invalid_transition: a succeeded payment cannot become failed
>>> compute_fee(FeeRule(rate_bps=10, min_fen=10, max_fen=2_500), 50_000)
50
>>> compute_fee(FeeRule(rate_bps=10, min_fen=10, max_fen=2_500), 1_000)
10
>>> compute_fee(FeeRule(rate_bps=60), 1_250)  # 7.5 fen rounds half up
8
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tongbao import errors
from tongbao.config import FeeBearer, FeeRule


class PaymentKind(StrEnum):
    TRANSFER = "transfer"
    """Wallet to another customer's wallet, in real time."""
    MERCHANT_PAYMENT = "merchant_payment"
    """Wallet to a merchant (consumption, QR code, bill payment)."""
    TOPUP = "topup"
    """Bound bank card to own wallet, through the bank channel (quick pay)."""
    WITHDRAWAL = "withdrawal"
    """Own wallet to a bound bank card; arrives within the working-day limit (PAY-6)."""
    REFUND = "refund"
    """Merchant back to the payer of a merchant payment (PAY-12)."""


class PaymentState(StrEnum):
    CREATED = "created"
    AWAITING_VERIFICATION = "awaiting_verification"
    UNDER_REVIEW = "under_review"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({PaymentState.SUCCEEDED, PaymentState.FAILED, PaymentState.CANCELLED})
_ORDER = [
    PaymentState.CREATED,
    PaymentState.AWAITING_VERIFICATION,
    PaymentState.UNDER_REVIEW,
    PaymentState.PROCESSING,
]


def check_transition(current: PaymentState, target: PaymentState) -> None:
    """Refuse any change the state machine does not allow."""
    if current.final:
        raise errors.InvalidTransition(f"a {current} payment cannot become {target}")
    if target is PaymentState.SUCCEEDED and current is not PaymentState.PROCESSING:
        raise errors.InvalidTransition(f"a {current} payment must be processing to succeed")
    if target.final:
        return
    if _ORDER.index(target) <= _ORDER.index(current):
        raise errors.InvalidTransition(f"a {current} payment cannot go to {target}")


class Mode(StrEnum):
    """PAY-11 arrival modes."""

    REALTIME = "realtime"
    NEXT_DAY = "next_day"
    SCHEDULED = "scheduled"


class Scenario(StrEnum):
    """PAY-11 scenarios; a label for statistics and limits, except cross-border,
    which this platform does not offer."""

    TRANSFER = "transfer"
    CONSUMPTION = "consumption"
    BILL_PAYMENT = "bill_payment"
    QR_CODE = "qr_code"
    QUICK_PAY = "quick_pay"
    WITHDRAWAL = "withdrawal"
    REFUND = "refund"
    CROSS_BORDER = "cross_border"


DEFAULT_SCENARIO = {
    PaymentKind.TRANSFER: Scenario.TRANSFER,
    PaymentKind.MERCHANT_PAYMENT: Scenario.CONSUMPTION,
    PaymentKind.TOPUP: Scenario.QUICK_PAY,
    PaymentKind.WITHDRAWAL: Scenario.WITHDRAWAL,
    PaymentKind.REFUND: Scenario.REFUND,
}
ALLOWED_SCENARIOS = {
    PaymentKind.TRANSFER: {Scenario.TRANSFER},
    PaymentKind.MERCHANT_PAYMENT: {Scenario.CONSUMPTION, Scenario.BILL_PAYMENT, Scenario.QR_CODE},
    PaymentKind.TOPUP: {Scenario.QUICK_PAY},
    PaymentKind.WITHDRAWAL: {Scenario.WITHDRAWAL},
    PaymentKind.REFUND: {Scenario.REFUND},
}


def check_scenario(kind: PaymentKind, scenario: Scenario) -> None:
    if scenario is Scenario.CROSS_BORDER:
        raise errors.ScenarioNotSupported("cross-border payments are not offered")
    if scenario not in ALLOWED_SCENARIOS[kind]:
        allowed = ", ".join(sorted(ALLOWED_SCENARIOS[kind]))
        raise errors.ValidationFailed(f"a {kind} payment's scenario is one of: {allowed}")


@dataclass(frozen=True, slots=True)
class FailureReason:
    code: str
    message: str
    retry_hint: str
    """PAY-9: what the customer can do next."""


FAILURES = {
    reason.code: reason
    for reason in (
        FailureReason(
            "verification_failed",
            "The verification code was wrong too many times.",
            "Start the payment again; a new code will be sent.",
        ),
        FailureReason(
            "verification_expired",
            "The payment was not verified in time.",
            "Start the payment again and enter the code within its lifetime.",
        ),
        FailureReason(
            "review_rejected",
            "The payment was declined after review.",
            "Contact customer service for the reason before trying again.",
        ),
        FailureReason(
            "review_expired",
            "The payment was not reviewed in time.",
            "Start the payment again or contact customer service.",
        ),
        FailureReason(
            "hold_expired",
            "The reserved funds were released before execution.",
            "Start the payment again.",
        ),
        FailureReason(
            "bank_rejected",
            "The bank refused the instruction.",
            "Check the card's status and balance with your bank, then try again.",
        ),
        FailureReason(
            "bank_signature_rejected",
            "The bank could not verify the platform's signature on the instruction "
            "(SEC-12); nothing was charged.",
            "Try again later; if it happens again, contact customer service.",
        ),
        FailureReason(
            "bank_failed",
            "The bank could not complete the transfer to the card.",
            "The money is back in your wallet; check the card and try again.",
        ),
        FailureReason(
            "insufficient_balance",
            "The available balance is not enough.",
            "Top up your wallet or lower the amount, then try again.",
        ),
        FailureReason(
            "payee_unavailable",
            "The payee account cannot receive payments.",
            "Check the payee with the recipient, then try again.",
        ),
        FailureReason(
            "account_frozen",
            "Your account is frozen.",
            "Apply to unfreeze your account, then try again.",
        ),
    )
}


def failure(code: str) -> FailureReason:
    return FAILURES[code]


def compute_fee(rule: FeeRule, amount: int) -> int:
    """Fee in fen: ``rate_bps`` of the amount rounded half up, plus ``fixed_fen``,
    clamped to ``[min_fen, max_fen]``. Integer arithmetic only."""
    fee = (amount * rule.rate_bps + 5_000) // 10_000 + rule.fixed_fen
    fee = max(fee, rule.min_fen)
    if rule.max_fen is not None:
        fee = min(fee, rule.max_fen)
    return fee


@dataclass(frozen=True, slots=True)
class Split:
    """How one payment's money moves: the payer gives ``debit``, the payee gets
    ``credit``, the institution keeps ``fee``; ``debit == credit + fee``."""

    debit: int
    credit: int
    fee: int


def split(amount: int, fee: int, bearer: FeeBearer) -> Split:
    if bearer is FeeBearer.PAYER:
        return Split(debit=amount + fee, credit=amount, fee=fee)
    if fee >= amount:
        raise errors.InvalidAmount(
            f"the fee ({fee} fen) would take the whole amount ({amount} fen)"
        )
    return Split(debit=amount, credit=amount - fee, fee=fee)


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    id: str
    account_id: str
    serial_no: str
    kind: PaymentKind
    state: PaymentState
    scenario: Scenario
    mode: Mode
    customer_id: str
    payer_account_id: str
    payee_account_id: str
    payer_name: str
    payee_name: str
    """As shown to the customer: a name, or a masked card for withdrawals."""
    card_id: str | None
    amount: int
    fee: int
    fee_bearer: FeeBearer
    currency: str
    purpose: str
    original_payment_id: str | None
    refunded_amount: int
    hold_id: str | None
    failure_code: str | None
    failure_message: str | None
    review_reason: str | None
    execute_at: datetime | None
    expected_arrival_by: datetime | None
    bank_reference: str | None
    objection_deadline: datetime | None
    acknowledged_at: datetime | None
    objected_at: datetime | None
    objection_reason: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @property
    def split(self) -> Split:
        return split(self.amount, self.fee, self.fee_bearer)

    @property
    def retry_hint(self) -> str | None:
        if self.failure_code is None:
            return None
        reason = FAILURES.get(self.failure_code)
        return reason.retry_hint if reason else None

    def confirmation(self, now: datetime) -> str:
        """PAY-10: ``objected``, ``accepted`` (explicitly or by silence past the
        deadline), ``pending`` inside the window, or ``not_applicable``."""
        if self.state is not PaymentState.SUCCEEDED or self.objection_deadline is None:
            return "not_applicable"
        if self.objected_at is not None:
            return "objected"
        if self.acknowledged_at is not None or now >= self.objection_deadline:
            return "accepted"
        return "pending"


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    payment_id: str
    seq: int
    from_state: PaymentState | None
    to_state: PaymentState
    actor: str
    note: str | None
    at: datetime
