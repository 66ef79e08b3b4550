"""Request and response bodies of the HTTP API.

Amounts go in as yuan strings (``"12.34"``, parsed by
:func:`tongbao.money.parse_yuan`) and come out twice: as a yuan string and as
integer fen (``amount`` / ``amount_fen``). Unknown request fields are refused.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tongbao.audit.sampling import MAX_FINDING, FindingState
from tongbao.money import format_yuan

YuanInput = Any  # validated by parse_yuan so the refusal has its own code


def yuan_field(description: str) -> Any:
    return Field(
        description=description,
        json_schema_extra={
            "type": "string",
            "pattern": r"^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$",
            "examples": ["12.34"],
        },
    )


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Amount(BaseModel):
    yuan: str
    fen: int

    @classmethod
    def of(cls, fen: int) -> Amount:
        return cls(yuan=format_yuan(fen), fen=fen)


# --- requests ---------------------------------------------------------------


class PaymentCreate(Request):
    kind: Literal["transfer", "merchant_payment", "topup", "withdrawal"]
    amount: YuanInput = yuan_field('What the payee is paid, in yuan, e.g. "12.34".')
    payee_account_id: str | None = Field(None, description="Transfers and merchant payments.")
    card_id: str | None = Field(None, description="Top-ups and withdrawals: a bound card.")
    purpose: str = Field("", max_length=140)
    payee_name: str | None = Field(
        None, description="PAY-5: the payee's full name, required for a first transfer."
    )
    scenario: str | None = Field(None, description="PAY-11 scenario; defaults by kind.")
    mode: Literal["realtime", "next_day", "scheduled"] = "realtime"
    execute_at: datetime | None = Field(None, description="For mode 'scheduled'.")
    confirm: bool = Field(
        False, description="Confirm at once instead of first returning the quote (PAY-3)."
    )


class VerifyCode(Request):
    code: str = Field(min_length=1, max_length=12)


class RefundCreate(Request):
    amount: YuanInput = yuan_field("How much to refund, at most what is left of the payment.")
    reason: str = Field("", max_length=140)


class Objection(Request):
    reason: str = Field(min_length=1, max_length=500)


class ReviewDecision(Request):
    note: str = Field("", max_length=200)


class CardBind(Request):
    bank_code: str = Field(examples=["SIMBANK"])
    card_number: str = Field(examples=["6222021234567890128"])
    holder_name: str
    phone: str
    expires: str = Field(description="YYYY-MM", examples=["2029-12"])


# --- responses ----------------------------------------------------------------


class Failure(BaseModel):
    code: str
    message: str
    retry_hint: str | None


class Party(BaseModel):
    account_id: str
    name: str


class Confirmation(BaseModel):
    """PAY-10: the payer's acceptance window after success."""

    status: Literal["not_applicable", "pending", "accepted", "objected"]
    deadline: datetime | None
    acknowledged_at: datetime | None
    objected_at: datetime | None
    objection_reason: str | None


class Event(BaseModel):
    seq: int
    from_state: str | None
    to_state: str
    actor: str
    note: str | None
    at: datetime


class Payment(BaseModel):
    object: Literal["payment"] = "payment"
    id: str
    serial_no: str
    kind: str
    state: str
    scenario: str
    mode: str
    amount: Amount
    fee: Amount
    fee_bearer: str
    total_debit: Amount
    payee_receives: Amount
    currency: str
    payer: Party
    payee: Party
    card_id: str | None
    purpose: str
    failure: Failure | None
    review_reason: str | None
    execute_at: datetime | None
    expected_arrival_by: datetime | None
    bank_reference: str | None
    original_payment_id: str | None
    refunded: Amount
    confirmation: Confirmation
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    events: list[Event] | None = Field(None, description="Present with ?expand=events.")


class VerificationFailure(BaseModel):
    attempts_left: int
    payment: Payment


class Balance(BaseModel):
    ledger: Amount
    held: Amount
    available: Amount
    incoming: Amount


class Account(BaseModel):
    object: Literal["account"] = "account"
    id: str
    type: str
    currency: str
    status: str
    balance: Balance
    created_at: datetime


class StatementLine(BaseModel):
    entry_id: str
    amount: Amount
    direction: Literal["in", "out"]
    balance_after: Amount | None
    kind: str
    reference: str | None
    description: str
    created_at: datetime


class Card(BaseModel):
    object: Literal["card"] = "card"
    id: str
    bank_code: str
    masked_number: str
    holder_name: str
    expires_on: date
    status: str
    created_at: datetime


class Me(BaseModel):
    object: Literal["customer"] = "customer"
    id: str
    kind: str
    name: str = Field(description="Masked (SEC-3), e.g. 张*")
    phone: str | None = Field(default=None, description="Masked, e.g. 138****8000")
    id_number: str | None = Field(default=None, description="Masked: first 6 and last 4")
    status: str
    account_id: str
    privacy_policy_version: str | None = Field(
        default=None, description="The privacy policy version this customer agreed to (DATA-1)"
    )


class ConsentGive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(
        min_length=1, max_length=20, description="The privacy policy version shown and accepted"
    )


class Consent(BaseModel):
    object: Literal["consent"] = "consent"
    id: str
    document: str
    version: str
    accepted_at: datetime
    channel: str
    withdrawn_at: datetime | None


class ConsentList(BaseModel):
    object: Literal["list"] = "list"
    current_version: str = Field(description="The policy version customers must agree to now")
    data: list[Consent]


class Notification(BaseModel):
    id: str
    channel: str
    kind: str
    text: str
    delivered_at: datetime


class Page(BaseModel):
    object: Literal["list"] = "list"
    next_cursor: str | None


class PaymentPage(Page):
    data: list[Payment]


class StatementPage(Page):
    data: list[StatementLine]


class NotificationPage(Page):
    data: list[Notification]


class CardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Card]


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Account]


# --- internal-audit samples (AUD-5) -----------------------------------------------


class AuditSampleDraw(Request):
    since: datetime = Field(description="Start of the period, inclusive, with its time zone")
    until: datetime = Field(description="End of the period, exclusive, with its time zone")
    size: int = Field(ge=1, description="How many of the period's completed transactions")


class AuditSampleResult(Request):
    outcome: Literal["ok", "problem"]
    finding: str | None = Field(
        None,
        max_length=MAX_FINDING,
        description="What is wrong: required for a problem, an optional note for ok",
    )


class AuditRectification(Request):
    note: str = Field(max_length=MAX_FINDING, description="What was done about the problem")


class AuditSampleItem(BaseModel):
    object: Literal["audit_sample_item"] = "audit_sample_item"
    sample_id: str
    payment_id: str
    serial_no: str
    state: FindingState
    finding: str | None
    deadline: datetime | None = Field(description="Rectify a problem by then (AUD-5)")
    overdue: bool = Field(description="A problem still open after its deadline")
    reviewed_by: str | None
    reviewed_at: datetime | None
    rectification: str | None
    rectified_by: str | None
    rectified_at: datetime | None


class AuditSample(BaseModel):
    object: Literal["audit_sample"] = "audit_sample"
    id: str
    period_start: datetime
    period_end: datetime
    population: int = Field(description="Completed transactions of the period")
    size: int
    seed: str = Field(description="Hex seed: the draw repeats from it")
    drawn_by: str
    drawn_at: datetime
    items: list[AuditSampleItem] | None = Field(description="Absent in lists")


class AuditSampleList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditSample]


class AuditSampleReport(BaseModel):
    object: Literal["audit_sample_report"] = "audit_sample_report"
    generated_at: datetime
    sample: AuditSample
    counts: dict[FindingState, int]
    complete: bool = Field(description="Every item reviewed and every problem rectified")
    problems: list[AuditSampleItem] = Field(description="Rectified or not, by deadline")
    overdue: list[AuditSampleItem] = Field(description="Problems open past their deadline")


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    schema_revision: str | None
