"""Payment orders: create (quote), confirm, verify, review, execute, refund.

Money moves only through :class:`tongbao.ledger.Ledger`. How each kind books
(``docs/payments.md`` has the full table):

* transfer / merchant payment — payer wallet → payee, fee to fee income. In
  real time without a hold; when the payment must wait (code, review,
  schedule) the debit is first reserved as a hold payer → transit, and on
  execution the hold is posted and transit pays out payee and fee.
* top-up — the bank pulls the money from the card; once the bank reports it
  settled: bank clearing (receivable) → wallet.
* withdrawal — hold wallet → transit; the bank accepts the credit → the hold
  is posted; the bank settles → transit → bank clearing (payable) and fee;
  the bank fails → transit → wallet, in full.
* refund — merchant → the original payer's wallet (PAY-12), never more than
  was paid in total.

Bank calls happen outside database transactions: the order is first
committed as ``processing`` with no bank reference, then
:meth:`Payments.submit_to_bank` sends the instruction (the bank dedupes by
our payment id) and records the outcome. A crash in between is repaired by
:meth:`Payments.sync_bank`, which the background loop runs every few seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, func, insert, select, update

from tongbao import errors
from tongbao.auth import Principal
from tongbao.banking import BankChannel, Instruction, InstructionDirection, InstructionStatus
from tongbao.banking.signing import InstructionSigner
from tongbao.calendar import BusinessCalendar
from tongbao.clock import SHANGHAI, Clock, business_date
from tongbao.config import FeeBearer, Settings
from tongbao.customers import Customer, Customers, CustomerStatus
from tongbao.ids import new_id
from tongbao.ledger import AccountType, HoldState, Ledger, Posting, transfer_postings
from tongbao.money import CURRENCY, check_fen, format_yuan
from tongbao.notifications import Notifications
from tongbao.pagination import Page, check_limit, page_of
from tongbao.payments import serial
from tongbao.payments import tables as t
from tongbao.payments.model import (
    DEFAULT_SCENARIO,
    Mode,
    PaymentEvent,
    PaymentKind,
    PaymentOrder,
    PaymentState,
    Scenario,
    check_scenario,
    check_transition,
    compute_fee,
    failure,
    split,
)
from tongbao.storage import Database, RetryTransactionError, is_unique_violation
from tongbao.storage.prepared import Prepared, pipeline

_INSERT_ORDER = Prepared(insert(t.payment_orders))
_INSERT_EVENT = Prepared(insert(t.payment_events))
_SYSTEM = "system"
_WAITING = (PaymentState.AWAITING_VERIFICATION, PaymentState.UNDER_REVIEW)
_VISIBLE_TO_PAYEE = (PaymentState.PROCESSING, PaymentState.SUCCEEDED, PaymentState.FAILED)


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    kind: PaymentKind
    amount: int
    payee_account_id: str | None = None
    card_id: str | None = None
    purpose: str = ""
    payee_name: str | None = None
    scenario: Scenario | None = None
    mode: Mode = Mode.REALTIME
    execute_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VerificationResult:
    order: PaymentOrder
    accepted: bool
    attempts_left: int


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    state: PaymentState | None = None
    kind: PaymentKind | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(slots=True)
class _Change:
    """One payment's changes within one transaction, written in one go."""

    order: PaymentOrder
    new: bool
    loaded_state: PaymentState | None
    next_seq: int
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def move(
        self,
        target: PaymentState,
        actor: str,
        now: datetime,
        note: str | None = None,
        **fields: Any,
    ) -> None:
        check_transition(self.order.state, target)
        self.events.append(
            {
                "payment_id": self.order.id,
                "seq": self.next_seq,
                "from_state": self.order.state.value,
                "to_state": target.value,
                "actor": actor,
                "note": note,
                "at": now,
            }
        )
        self.next_seq += 1
        self.order = replace(self.order, state=target, updated_at=now, **fields)

    def set(self, **fields: Any) -> None:
        self.order = replace(self.order, **fields)

    def note(self, actor: str, now: datetime, text: str) -> None:
        """An event that records something without changing the state."""
        state = self.order.state.value
        self.events.append(
            {
                "payment_id": self.order.id,
                "seq": self.next_seq,
                "from_state": state,
                "to_state": state,
                "actor": actor,
                "note": text[:200],
                "at": now,
            }
        )
        self.next_seq += 1

    def notify(self, recipient_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.notes.append((recipient_id, kind, payload))


class Payments:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        clock: Clock,
        ledger: Ledger,
        customers: Customers,
        notifications: Notifications,
        calendar: BusinessCalendar,
        banks: Mapping[str, BankChannel],
        signer: InstructionSigner,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.ledger = ledger
        self.customers = customers
        self.notifications = notifications
        self.calendar = calendar
        self.banks = banks
        self.signer = signer
        """SEC-12/PAY-6: signs every bank instruction (only on the bank path)."""

    # ------------------------------------------------------------------ create

    def create(self, conn: Connection, customer: Customer, request: PaymentRequest) -> PaymentOrder:
        """A payment in state ``created``: the quote the customer confirms (PAY-1, PAY-3)."""
        return self._flush(conn, self._build(conn, customer, request))

    def pay(self, conn: Connection, customer: Customer, request: PaymentRequest) -> PaymentOrder:
        """Create and confirm in one step (the realtime wallet hot path)."""
        change = self._build(conn, customer, request)
        self._confirm(conn, change, customer.id)
        return self._flush(conn, change)

    def _build(self, conn: Connection, customer: Customer, request: PaymentRequest) -> _Change:
        self._require_active(customer)
        if customer.consented_policy_version != self.settings.privacy_policy_version:
            raise errors.ConsentRequired(
                f"agree to privacy policy {self.settings.privacy_policy_version} before paying "
                "(POST /v1/me/consents)"
            )
        kind = request.kind
        if kind is PaymentKind.REFUND:
            raise errors.ValidationFailed("refunds are made with the refund call on the payment")
        amount = check_fen(request.amount, max_fen=self.settings.max_amount_fen)
        scenario = request.scenario or DEFAULT_SCENARIO[kind]
        check_scenario(kind, scenario)
        purpose = request.purpose.strip()
        if len(purpose) > 140:
            raise errors.ValidationFailed("purpose is at most 140 characters")
        now = self.clock.now()
        execute_at = self._execute_at(kind, request, now)

        card_id = None
        # Orders keep display names (persons masked, SEC-3): history reads them
        # without decrypting anything, and they outlive crypto-shredding.
        payer_name = payee_name = customer.display_name
        if kind in (PaymentKind.TRANSFER, PaymentKind.MERCHANT_PAYMENT):
            payee_customer = self._payee(conn, customer, request)
            payer, payee = customer.account_id, payee_customer.account_id
            payee_name = payee_customer.display_name
        else:
            if not request.card_id:
                raise errors.ValidationFailed(f"a {kind} needs card_id, a bound bank card")
            card = self.customers.usable_card(conn, customer.id, request.card_id)
            card_id = card.id
            clearing = self._bank_clearing(conn, card.bank_code)
            card_label = f"{card.bank_code} {card.masked_number}"
            if kind is PaymentKind.TOPUP:
                payer, payee = clearing, customer.account_id
                payer_name, payee_name = card_label, f"{customer.display_name}的钱包"
            else:
                payer, payee = customer.account_id, clearing
                payee_name = card_label

        rule = self.settings.fee_schedule[kind.value]
        fee = compute_fee(rule, amount)
        split(amount, fee, rule.bearer)  # refuses a fee that eats the amount
        payment_id = new_id("pay")
        order = PaymentOrder(
            id=payment_id,
            account_id=customer.account_id,
            serial_no=serial.new_serial(now, kind.value),
            kind=kind,
            state=PaymentState.CREATED,
            scenario=scenario,
            mode=request.mode,
            customer_id=customer.id,
            payer_account_id=payer,
            payee_account_id=payee,
            payer_name=payer_name[:100],
            payee_name=payee_name[:100],
            card_id=card_id,
            amount=amount,
            fee=fee,
            fee_bearer=rule.bearer,
            currency=CURRENCY,
            purpose=purpose,
            original_payment_id=None,
            refunded_amount=0,
            hold_id=None,
            failure_code=None,
            failure_message=None,
            review_reason=None,
            execute_at=execute_at,
            expected_arrival_by=None,
            bank_reference=None,
            objection_deadline=None,
            acknowledged_at=None,
            objected_at=None,
            objection_reason=None,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )
        if kind is PaymentKind.WITHDRAWAL:
            order = replace(
                order,
                expected_arrival_by=self.calendar.end_of_working_day_after(
                    now, self.settings.bank_arrival_working_days
                ),
            )
        change = _Change(order, new=True, loaded_state=None, next_seq=2)
        change.events.append(
            {
                "payment_id": payment_id,
                "seq": 1,
                "from_state": None,
                "to_state": PaymentState.CREATED.value,
                "actor": f"customer:{customer.id}",
                "note": None,
                "at": now,
            }
        )
        return change

    def _payee(self, conn: Connection, customer: Customer, request: PaymentRequest) -> Customer:
        payee_id = request.payee_account_id
        if not payee_id:
            raise errors.ValidationFailed(f"a {request.kind} needs payee_account_id")
        if payee_id == customer.account_id:
            raise errors.SamePayerPayee("payer and payee are the same account")
        payee = self.customers.by_account(conn, payee_id)
        wanted = "merchant" if request.kind is PaymentKind.MERCHANT_PAYMENT else "person"
        if payee is None or payee.kind.value != wanted:
            raise errors.AccountNotFound(f"no {wanted} account {payee_id}")
        # The ledger lets money into a frozen account (for corrections and
        # refunds), but customers cannot send new payments to one (ACC-9).
        if payee.status is CustomerStatus.FROZEN:
            raise errors.AccountFrozen(f"account {payee_id} is frozen and cannot receive payments")
        if payee.status is CustomerStatus.CLOSED:
            raise errors.AccountClosed(f"account {payee_id} is closed")
        if request.kind is PaymentKind.TRANSFER and self.settings.familiar_payee_check:
            self._check_payee_name(conn, customer, payee, request.payee_name)
        return payee

    def _check_payee_name(
        self, conn: Connection, payer: Customer, payee: Customer, given: str | None
    ) -> None:
        """PAY-5: a first transfer to a payee needs the payee's name."""
        if given is not None:
            if _normal(given) != _normal(payee.name):
                raise errors.PayeeNameMismatch("the payee name does not match the account")
            return
        o = t.payment_orders
        familiar = conn.execute(
            select(o.c.id)
            .where(
                o.c.payer_account_id == payer.account_id,
                o.c.payee_account_id == payee.account_id,
                o.c.state == PaymentState.SUCCEEDED.value,
            )
            .limit(1)
        ).first()
        if familiar is None:
            raise errors.PayeeNameRequired(
                "first transfer to this payee: send payee_name, the payee's full name"
            )

    def _execute_at(
        self, kind: PaymentKind, request: PaymentRequest, now: datetime
    ) -> datetime | None:
        """PAY-11: when a next-day or scheduled payment executes."""
        if request.mode is Mode.REALTIME:
            if request.execute_at is not None:
                raise errors.ValidationFailed("execute_at goes with mode 'scheduled'")
            return None
        if kind not in (PaymentKind.TRANSFER, PaymentKind.MERCHANT_PAYMENT):
            raise errors.ValidationFailed(f"a {kind} is executed in real time only")
        if request.mode is Mode.NEXT_DAY:
            day = self.calendar.next_working_day(business_date(now))
            hour = time(self.settings.next_day_execution_hour, tzinfo=SHANGHAI)
            return datetime.combine(day, hour).astimezone(now.tzinfo)
        if request.execute_at is None or request.execute_at.tzinfo is None:
            raise errors.ValidationFailed("a scheduled payment needs execute_at with a time zone")
        if request.execute_at <= now:
            raise errors.ValidationFailed("execute_at must be in the future")
        if request.execute_at > now + timedelta(seconds=self.settings.payment_hold_ttl_seconds):
            raise errors.ValidationFailed(
                "execute_at is too far ahead; funds can be reserved for at most "
                f"{self.settings.payment_hold_ttl_seconds // 3600} hours"
            )
        return request.execute_at

    # ----------------------------------------------------------------- confirm

    def confirm(self, conn: Connection, customer: Customer, payment_id: str) -> PaymentOrder:
        """Move a created payment on: verification, review, schedule or execution.

        For bank kinds this stops at ``processing``; call :meth:`submit_to_bank`
        after the transaction commits.
        """
        self._require_active(customer)
        change = self._load(conn, payment_id, customer_id=customer.id)
        if change.order.state is not PaymentState.CREATED:
            raise errors.InvalidTransition(f"payment is {change.order.state}, not created")
        self._confirm(conn, change, customer.id)
        return self._flush(conn, change)

    def _confirm(self, conn: Connection, change: _Change, customer_id: str) -> None:
        order, now, actor = change.order, self.clock.now(), f"customer:{customer_id}"
        if needs_code(order, self.settings.verification_threshold_fen):
            self._reserve(conn, change)
            code = f"{secrets.randbelow(10**6):06d}"
            ttl = self.settings.verification_code_ttl_seconds
            conn.execute(
                insert(t.payment_verifications),
                {
                    "payment_id": order.id,
                    "code_hash": _code_hash(order.id, code),
                    "expires_at": now + timedelta(seconds=ttl),
                    "attempts": 0,
                },
            )
            change.move(
                PaymentState.AWAITING_VERIFICATION, actor, now, note="one-time code sent (PAY-4)"
            )
            change.notify(
                customer_id,
                "verification_code",
                {
                    "code": code,
                    "amount_fen": order.split.debit,
                    "payee_name": order.payee_name,
                    "expires_minutes": ttl // 60,
                },
            )
            return
        self._after_verification(conn, change, actor)

    def _after_verification(self, conn: Connection, change: _Change, actor: str) -> None:
        order, now = change.order, self.clock.now()
        if order.amount >= self.settings.review_threshold_fen:
            self._reserve(conn, change)
            reason = (
                f"amount at or above the review threshold "
                f"{format_yuan(self.settings.review_threshold_fen)}"
            )
            change.move(PaymentState.UNDER_REVIEW, actor, now, note=reason, review_reason=reason)
            change.notify(
                order.customer_id,
                "payment_pending_review",
                {"serial_no": order.serial_no, "amount_fen": order.amount},
            )
            return
        self._start(conn, change, actor)

    def _start(
        self, conn: Connection, change: _Change, actor: str, note: str | None = None
    ) -> None:
        """Into ``processing``; execute now unless scheduled or waiting for a bank."""
        order, now = change.order, self.clock.now()
        if order.execute_at is not None and order.execute_at > now:
            self._reserve(conn, change)
            scheduled = f"scheduled for {order.execute_at.isoformat()}"
            change.move(
                PaymentState.PROCESSING,
                actor,
                now,
                note=f"{note}; {scheduled}" if note else scheduled,
            )
            return
        change.move(PaymentState.PROCESSING, actor, now, note=note)
        if order.kind is PaymentKind.WITHDRAWAL:
            self._reserve(conn, change)  # the bank call follows after commit
        elif order.kind in (PaymentKind.TRANSFER, PaymentKind.MERCHANT_PAYMENT):
            self._execute_wallet(conn, change)

    def _reserve(self, conn: Connection, change: _Change) -> None:
        """Hold the payer's debit (payer → transit) while the payment waits."""
        order = change.order
        if order.hold_id is not None or order.kind is PaymentKind.TOPUP:
            return  # already held; a top-up reserves nothing (the bank holds the card)
        ttl = timedelta(seconds=self.settings.payment_hold_ttl_seconds)
        start = max(self.clock.now(), order.execute_at or self.clock.now())
        hold = self.ledger.create_hold(
            conn,
            debit_account_id=order.payer_account_id,
            credit_account_id=self._transit(conn),
            amount=order.split.debit,
            expires_at=start + ttl,
            reference=order.id,
        )
        change.set(hold_id=hold.id)

    def _execute_wallet(self, conn: Connection, change: _Change) -> None:
        order = change.order
        s = order.split
        if order.hold_id is None:
            postings = [
                Posting.debit(order.payer_account_id, s.debit),
                Posting.credit(order.payee_account_id, s.credit),
            ]
        else:
            self.ledger.post_hold(conn, order.hold_id, description=f"payment {order.serial_no}")
            postings = [
                Posting.debit(self._transit(conn), s.debit),
                Posting.credit(order.payee_account_id, s.credit),
            ]
        if s.fee:
            postings.append(Posting.credit(self._fees(conn), s.fee))
        self.ledger.transfer(
            conn, postings, reference=order.id, description=f"{order.kind} {order.serial_no}"
        )
        self._succeed(conn, change)

    def _succeed(self, conn: Connection, change: _Change) -> None:
        now = self.clock.now()
        deadline = self.calendar.end_of_working_day_after(
            now, self.settings.objection_window_working_days
        )
        change.move(
            PaymentState.SUCCEEDED, _SYSTEM, now, completed_at=now, objection_deadline=deadline
        )
        order = change.order
        completed = now.isoformat()
        if order.kind is PaymentKind.TOPUP:
            change.notify(
                order.customer_id,
                "topup_succeeded",
                {
                    "serial_no": order.serial_no,
                    "amount_fen": order.split.credit,
                    "payer_name": order.payer_name,
                    "completed_at": completed,
                },
            )
            return
        change.notify(
            order.customer_id,
            "payment_succeeded",
            {
                "serial_no": order.serial_no,
                "amount_fen": order.amount,
                "fee_fen": order.fee,
                "payee_name": order.payee_name,
                "completed_at": completed,
            },
        )
        if order.kind in (PaymentKind.TRANSFER, PaymentKind.MERCHANT_PAYMENT):
            payee_customer = self._owner(conn, order.payee_account_id)
            if payee_customer is not None:
                change.notify(
                    payee_customer,
                    "payment_received",
                    {
                        "serial_no": order.serial_no,
                        "amount_fen": order.split.credit,
                        "payer_name": order.payer_name,
                        "completed_at": completed,
                    },
                )

    def _fail(
        self, conn: Connection, change: _Change, code: str, actor: str, detail: str | None = None
    ) -> None:
        reason = failure(code)
        order = change.order
        self._release(conn, order)
        message = f"{reason.message} {detail}" if detail else reason.message
        change.move(
            PaymentState.FAILED,
            actor,
            self.clock.now(),
            note=code,
            failure_code=code,
            failure_message=message[:200],
        )
        change.notify(
            order.customer_id,
            "payment_failed",
            {
                "serial_no": order.serial_no,
                "amount_fen": order.amount,
                "failure_message": message,
                "retry_hint": reason.retry_hint,
            },
        )

    def _release(self, conn: Connection, order: PaymentOrder) -> None:
        """Give back a payment's reserved money: void its hold, or expire it if its time is up."""
        if order.hold_id is None:
            return
        hold = self.ledger.hold(conn, order.hold_id)
        if hold.state is not HoldState.PENDING:
            return
        if hold.expires_at <= self.clock.now():
            self.ledger.expire_hold(conn, order.hold_id)
        else:
            self.ledger.void_hold(conn, order.hold_id)

    def _usable_hold(self, conn: Connection, order: PaymentOrder) -> bool:
        if order.hold_id is None:
            return False
        hold = self.ledger.hold(conn, order.hold_id)
        return hold.state is HoldState.PENDING and hold.expires_at > self.clock.now()

    # ------------------------------------------------------------ verification

    def verify(
        self, conn: Connection, customer: Customer, payment_id: str, code: str
    ) -> VerificationResult:
        """Check the one-time code (PAY-4). Wrong codes are counted (AUTH-5); the
        last allowed wrong code fails the payment. Commit the result either way."""
        change = self._load(conn, payment_id, customer_id=customer.id)
        if change.order.state is not PaymentState.AWAITING_VERIFICATION:
            raise errors.InvalidTransition(f"payment is {change.order.state}, not awaiting a code")
        v = t.payment_verifications
        row = conn.execute(select(v).where(v.c.payment_id == payment_id).with_for_update()).one()
        now, actor = self.clock.now(), f"customer:{customer.id}"
        if row.expires_at <= now:
            self._fail(conn, change, "verification_expired", actor)
            return VerificationResult(self._flush(conn, change), accepted=False, attempts_left=0)
        if hmac.compare_digest(row.code_hash, _code_hash(payment_id, code.strip())):
            conn.execute(update(v).where(v.c.payment_id == payment_id).values(expires_at=now))
            self._after_verification(conn, change, actor)
            left = self.settings.verification_max_attempts - row.attempts
            return VerificationResult(self._flush(conn, change), accepted=True, attempts_left=left)
        # A wrong code is recorded with its reason (AUTH-5), not rolled back.
        attempts = row.attempts + 1
        conn.execute(update(v).where(v.c.payment_id == payment_id).values(attempts=attempts))
        left = self.settings.verification_max_attempts - attempts
        if left <= 0:
            self._fail(conn, change, "verification_failed", actor)
        else:
            change.note(actor, now, f"wrong verification code, attempt {attempts}")
        return VerificationResult(self._flush(conn, change), accepted=False, attempts_left=left)

    # ------------------------------------------------------------------ review

    def review_queue(self, conn: Connection, *, limit: int = 50) -> list[PaymentOrder]:
        o = t.payment_orders
        rows = conn.execute(
            select(o)
            .where(o.c.state == PaymentState.UNDER_REVIEW.value)
            .order_by(o.c.id)
            .limit(limit)
        )
        return [order_from_row(r._mapping) for r in rows]

    def approve(
        self, conn: Connection, reviewer: Principal, payment_id: str, note: str = ""
    ) -> PaymentOrder:
        change = self._load(conn, payment_id)
        if change.order.state is not PaymentState.UNDER_REVIEW:
            raise errors.InvalidTransition(f"payment is {change.order.state}, not under review")
        self._start(conn, change, reviewer.actor, note=f"approved: {note}" if note else "approved")
        return self._flush(conn, change)

    def reject(
        self, conn: Connection, reviewer: Principal, payment_id: str, note: str = ""
    ) -> PaymentOrder:
        change = self._load(conn, payment_id)
        if change.order.state is not PaymentState.UNDER_REVIEW:
            raise errors.InvalidTransition(f"payment is {change.order.state}, not under review")
        self._fail(conn, change, "review_rejected", reviewer.actor, detail=note or None)
        return self._flush(conn, change)

    # ------------------------------------------------------------------ cancel

    def cancel(self, conn: Connection, customer: Customer, payment_id: str) -> PaymentOrder:
        """The customer withdraws a payment that has not executed yet."""
        change = self._load(conn, payment_id, customer_id=customer.id)
        order = change.order
        executing = order.state is PaymentState.PROCESSING and (
            order.execute_at is None or order.execute_at <= self.clock.now()
        )
        if order.state.final or executing:
            raise errors.InvalidTransition(f"a {order.state} payment can no longer be cancelled")
        if order.hold_id is not None:
            self.ledger.void_hold(conn, order.hold_id)
        change.move(PaymentState.CANCELLED, f"customer:{customer.id}", self.clock.now())
        return self._flush(conn, change)

    # ------------------------------------------------------------------- banks

    def needs_bank(self, order: PaymentOrder) -> bool:
        return (
            order.kind in (PaymentKind.TOPUP, PaymentKind.WITHDRAWAL)
            and order.state is PaymentState.PROCESSING
            and order.bank_reference is None
        )

    def submit_to_bank(self, payment_id: str) -> PaymentOrder:
        """Send a processing bank payment's instruction and record the outcome.

        Safe to call again at any time: the bank answers a repeated id with its
        first outcome and the recording step only acts on a payment still
        waiting for it.
        """
        order = self.db.read(lambda conn: self.get(conn, payment_id))
        if not self.needs_bank(order):
            return order
        card = self.db.read(
            lambda conn: self.customers.card(
                conn, order.customer_id, order.card_id or "", any_status=True
            )
        )
        bank = self.banks[card.bank_code]
        direction = (
            InstructionDirection.DEBIT
            if order.kind is PaymentKind.TOPUP
            else InstructionDirection.CREDIT
        )
        amount = order.split.debit if order.kind is PaymentKind.TOPUP else order.split.credit
        # After a crash the bank may already hold our instruction: its answer counts.
        receipt = bank.status(order.id)
        if receipt is None:
            if order.kind is PaymentKind.WITHDRAWAL and not self.db.read(
                lambda conn: self._usable_hold(conn, order)
            ):
                return self.db.run(lambda conn: self._give_up(conn, payment_id, "hold_expired"))
            instruction = Instruction(
                order.id,
                direction,
                card.agreement_id,
                amount,
                memo=f"{order.kind} {order.serial_no}",
                bank_code=card.bank_code,
            )
            receipt = bank.submit(self.signer.sign(instruction, self.clock.now()))

        def record(conn: Connection) -> PaymentOrder:
            change = self._load(conn, payment_id)
            if not self.needs_bank(change.order):
                return change.order
            if receipt.status is InstructionStatus.REJECTED:
                code = "bank_signature_rejected" if receipt.signature_rejected else "bank_rejected"
                self._fail(conn, change, code, f"bank:{card.bank_code}", detail=receipt.reason)
            elif order.kind is PaymentKind.TOPUP:
                if receipt.status is InstructionStatus.SETTLED:
                    self._book_topup(conn, change, receipt.bank_reference)
            else:
                # Accepted (or already settled): the money leaves the wallet now.
                self._debit_withdrawal(conn, change)
                change.set(bank_reference=receipt.bank_reference)
                change.notify(
                    order.customer_id,
                    "withdrawal_accepted",
                    {
                        "serial_no": order.serial_no,
                        "amount_fen": order.amount,
                        "arrives_by": (order.expected_arrival_by or self.clock.now()).isoformat(),
                    },
                )
                if receipt.status is InstructionStatus.SETTLED:
                    self._book_withdrawal(conn, change)
            return self._flush(conn, change)

        return self.db.run(record, what="record bank outcome")

    def _give_up(self, conn: Connection, payment_id: str, code: str) -> PaymentOrder:
        change = self._load(conn, payment_id)
        if not self.needs_bank(change.order):
            return change.order
        self._fail(conn, change, code, _SYSTEM)
        return self._flush(conn, change)

    def _debit_withdrawal(self, conn: Connection, change: _Change) -> None:
        """The bank accepted a withdrawal: move the debit from the wallet to transit.

        Normally by posting the hold. If the hold ran out before the bank
        answered, the bank has the money all the same: debit the wallet
        directly, and if it no longer has the money, book the debit to
        suspense, where the back office recovers it (PAY-13) — the books
        balance either way.
        """
        order = change.order
        description = f"withdrawal {order.serial_no}"
        if self._usable_hold(conn, order):
            self.ledger.post_hold(conn, order.hold_id or "", description=description)
            return
        self._release(conn, order)
        debit = order.split.debit
        transit = self._transit(conn)
        try:
            with conn.begin_nested():
                self.ledger.transfer(
                    conn,
                    transfer_postings(order.payer_account_id, transit, debit),
                    reference=order.id,
                    description=description,
                )
        except (errors.InsufficientFunds, errors.AccountFrozen, errors.AccountClosed) as exc:
            self.ledger.transfer(
                conn,
                transfer_postings(self.ledger.account_id_by_code(conn, SUSPENSE), transit, debit),
                reference=order.id,
                description=f"{description}: wallet short after hold expiry, to recover",
            )
            change.note(
                _SYSTEM, self.clock.now(), f"booked to suspense for recovery: {exc.code} (PAY-13)"
            )

    def _book_topup(self, conn: Connection, change: _Change, bank_reference: str | None) -> None:
        order = change.order
        s = order.split
        postings = [
            Posting.debit(order.payer_account_id, s.debit),
            Posting.credit(order.payee_account_id, s.credit),
        ]
        if s.fee:
            postings.append(Posting.credit(self._fees(conn), s.fee))
        self.ledger.transfer(
            conn, postings, reference=order.id, description=f"top-up {order.serial_no}"
        )
        change.set(bank_reference=bank_reference)
        self._succeed(conn, change)

    def _book_withdrawal(self, conn: Connection, change: _Change) -> None:
        order = change.order
        s = order.split
        postings = [
            Posting.debit(self._transit(conn), s.debit),
            Posting.credit(order.payee_account_id, s.credit),
        ]
        if s.fee:
            postings.append(Posting.credit(self._fees(conn), s.fee))
        self.ledger.transfer(
            conn, postings, reference=order.id, description=f"withdrawal settled {order.serial_no}"
        )
        self._succeed(conn, change)

    def sync_bank(self) -> int:
        """Bring processing bank payments up to date with the banks. Returns how many changed."""
        o = t.payment_orders
        rows = self.db.read(
            lambda conn: conn.execute(
                select(o.c.id, o.c.bank_reference)
                .where(
                    o.c.state == PaymentState.PROCESSING.value,
                    o.c.kind.in_([PaymentKind.TOPUP.value, PaymentKind.WITHDRAWAL.value]),
                )
                .order_by(o.c.id)
                .limit(500)
            ).all()
        )
        changed = 0
        for payment_id, reference in rows:
            if reference is None:
                if self.submit_to_bank(payment_id).state is not PaymentState.PROCESSING:
                    changed += 1
            elif self._settle_withdrawal(payment_id):
                changed += 1
        return changed

    def _settle_withdrawal(self, payment_id: str) -> bool:
        order = self.db.read(lambda conn: self.get(conn, payment_id))
        card = self.db.read(
            lambda conn: self.customers.card(
                conn, order.customer_id, order.card_id or "", any_status=True
            )
        )
        receipt = self.banks[card.bank_code].status(payment_id)
        if receipt is None or not receipt.status.final:
            return False

        def record(conn: Connection) -> bool:
            change = self._load(conn, payment_id)
            if change.order.state is not PaymentState.PROCESSING:
                return False
            if receipt.status is InstructionStatus.SETTLED:
                self._book_withdrawal(conn, change)
            else:  # failed after acceptance: the money goes back to the wallet, fee included
                s = change.order.split
                self.ledger.transfer(
                    conn,
                    [
                        Posting.debit(self._transit(conn), s.debit),
                        Posting.credit(change.order.payer_account_id, s.debit),
                    ],
                    reference=payment_id,
                    description=f"withdrawal returned {change.order.serial_no}",
                )
                self._fail(
                    conn, change, "bank_failed", f"bank:{card.bank_code}", detail=receipt.reason
                )
            self._flush(conn, change)
            return True

        return self.db.run(record, what="settle withdrawal")

    # -------------------------------------------------------------- background

    def run_due(self) -> int:
        """Execute scheduled and next-day payments whose time has come (PAY-11)."""
        o = t.payment_orders
        now = self.clock.now()
        ids = self.db.read(
            lambda conn: list(
                conn.execute(
                    select(o.c.id)
                    .where(
                        o.c.state == PaymentState.PROCESSING.value,
                        o.c.execute_at <= now,
                        o.c.kind.in_(
                            [PaymentKind.TRANSFER.value, PaymentKind.MERCHANT_PAYMENT.value]
                        ),
                    )
                    .order_by(o.c.execute_at)
                    .limit(500)
                ).scalars()
            )
        )
        for payment_id in ids:
            self.db.run(partial(self._execute_due, payment_id=payment_id))
        return len(ids)

    def _execute_due(self, conn: Connection, *, payment_id: str) -> None:
        change = self._load(conn, payment_id)
        if change.order.state is not PaymentState.PROCESSING:
            return
        if not self._usable_hold(conn, change.order):
            self._fail(conn, change, "hold_expired", _SYSTEM)
            self._flush(conn, change)
            return
        try:
            with conn.begin_nested():
                self._execute_wallet(conn, change)
        except (errors.AccountClosed, errors.AccountFrozen, errors.AccountNotFound) as exc:
            change = self._load(conn, payment_id)
            code = (
                "account_frozen" if isinstance(exc, errors.AccountFrozen) else "payee_unavailable"
            )
            self._fail(conn, change, code, _SYSTEM, detail=exc.detail)
        self._flush(conn, change)

    def expire_stale(self) -> int:
        """Fail payments whose code, review or reserved funds ran out of time."""
        o = t.payment_orders
        now = self.clock.now()
        waiting = [s.value for s in _WAITING]
        ids = self.db.read(
            lambda conn: list(
                conn.execute(
                    select(o.c.id).where(o.c.state.in_(waiting)).order_by(o.c.id).limit(1000)
                ).scalars()
            )
        )
        expired = 0
        for payment_id in ids:
            if self.db.run(partial(self._expire_one, payment_id=payment_id, now=now)):
                expired += 1
        return expired

    def _expire_one(self, conn: Connection, *, payment_id: str, now: datetime) -> bool:
        change = self._load(conn, payment_id)
        order = change.order
        if order.state is PaymentState.AWAITING_VERIFICATION:
            v = t.payment_verifications
            expires = conn.execute(
                select(v.c.expires_at).where(v.c.payment_id == payment_id)
            ).scalar_one()
            if expires > now:
                return False
            self._fail(conn, change, "verification_expired", _SYSTEM)
        elif order.state is PaymentState.UNDER_REVIEW:
            # The hold's lifetime is the review deadline; a top-up holds nothing,
            # so its deadline counts from when it entered review.
            if order.hold_id is not None:
                deadline = self.ledger.hold(conn, order.hold_id).expires_at
            else:
                deadline = order.updated_at + timedelta(
                    seconds=self.settings.payment_hold_ttl_seconds
                )
            if deadline > now:
                return False
            self._fail(conn, change, "review_expired", _SYSTEM)
        else:
            return False
        self._flush(conn, change)
        return True

    def tick(self) -> dict[str, int]:
        """One round of background duties."""
        return {
            "expired": self.expire_stale(),
            "executed": self.run_due(),
            "bank_updates": self.sync_bank(),
        }

    # ----------------------------------------------------------------- refunds

    def refund(
        self, conn: Connection, merchant: Customer, payment_id: str, amount: int, reason: str = ""
    ) -> PaymentOrder:
        """Refund part or all of a merchant payment to its payer (PAY-12)."""
        self._require_active(merchant)
        original = self._load(conn, payment_id)
        o_order = original.order
        if o_order.payee_account_id != merchant.account_id:
            raise errors.PaymentNotFound(f"no payment {payment_id} to this merchant")
        if (
            o_order.kind is not PaymentKind.MERCHANT_PAYMENT
            or o_order.state is not PaymentState.SUCCEEDED
        ):
            raise errors.NotRefundable(f"a {o_order.state} {o_order.kind} cannot be refunded")
        amount = check_fen(amount, max_fen=self.settings.max_amount_fen)
        left = o_order.amount - o_order.refunded_amount
        if amount > left:
            raise errors.RefundExceedsPayment(
                f"at most {format_yuan(left)} of {format_yuan(o_order.amount)} is left to refund"
            )
        now = self.clock.now()
        refund = PaymentOrder(
            id=new_id("pay"),
            account_id=merchant.account_id,
            serial_no=serial.new_serial(now, PaymentKind.REFUND.value),
            kind=PaymentKind.REFUND,
            state=PaymentState.CREATED,
            scenario=Scenario.REFUND,
            mode=Mode.REALTIME,
            customer_id=merchant.id,
            payer_account_id=merchant.account_id,
            payee_account_id=o_order.payer_account_id,
            payer_name=merchant.display_name[:100],
            payee_name=o_order.payer_name,
            card_id=None,
            amount=amount,
            fee=0,
            fee_bearer=FeeBearer.PAYER,
            currency=o_order.currency,
            purpose=reason.strip()[:140],
            original_payment_id=o_order.id,
            refunded_amount=0,
            hold_id=None,
            failure_code=None,
            failure_message=None,
            review_reason=None,
            execute_at=None,
            expected_arrival_by=None,
            bank_reference=None,
            objection_deadline=None,
            acknowledged_at=None,
            objected_at=None,
            objection_reason=None,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )
        change = _Change(refund, new=True, loaded_state=None, next_seq=1)
        change.move(PaymentState.PROCESSING, f"customer:{merchant.id}", now)
        self.ledger.transfer(
            conn,
            [
                Posting.debit(merchant.account_id, amount),
                Posting.credit(o_order.payer_account_id, amount),
            ],
            reference=refund.id,
            description=f"refund of {o_order.serial_no}",
        )
        change.move(PaymentState.SUCCEEDED, _SYSTEM, now, completed_at=now)
        change.notify(
            o_order.customer_id,
            "refund_succeeded",
            {
                "serial_no": refund.serial_no,
                "amount_fen": amount,
                "completed_at": now.isoformat(),
            },
        )
        original.set(refunded_amount=o_order.refunded_amount + amount, updated_at=now)
        original.note(
            f"customer:{merchant.id}", now, f"refunded {format_yuan(amount)} by {refund.serial_no}"
        )
        self._flush(conn, original)
        return self._flush(conn, change)

    # ---------------------------------------------------------- confirmation

    def acknowledge(self, conn: Connection, customer: Customer, payment_id: str) -> PaymentOrder:
        """PAY-10: the payer accepts the result before the window closes."""
        change = self._objection_window(conn, customer, payment_id)
        change.set(acknowledged_at=self.clock.now())
        return self._flush(conn, change)

    def object(
        self, conn: Connection, customer: Customer, payment_id: str, reason: str
    ) -> PaymentOrder:
        """PAY-10: the payer objects within the window; the objection is recorded
        for the complaints desk."""
        if not reason.strip():
            raise errors.ValidationFailed("an objection needs a reason")
        change = self._objection_window(conn, customer, payment_id)
        now = self.clock.now()
        change.set(objected_at=now, objection_reason=reason.strip()[:500], updated_at=now)
        change.note(f"customer:{customer.id}", now, "customer objected (PAY-10)")
        return self._flush(conn, change)

    def _objection_window(self, conn: Connection, customer: Customer, payment_id: str) -> _Change:
        change = self._load(conn, payment_id, customer_id=customer.id)
        status = change.order.confirmation(self.clock.now())
        if status != "pending":
            raise errors.ObjectionWindowClosed(f"the payment's confirmation is {status}")
        return change

    # ----------------------------------------------------------------- queries

    def get(
        self, conn: Connection, payment_id: str, *, customer_id: str | None = None
    ) -> PaymentOrder:
        """By id or serial number; with ``customer_id``, only orders that customer
        may see (as initiator or as payee)."""
        o = t.payment_orders
        column = o.c.serial_no if serial.is_valid(payment_id) else o.c.id
        row = conn.execute(select(o).where(column == payment_id)).first()
        if row is None:
            raise errors.PaymentNotFound(f"no payment {payment_id}")
        order = order_from_row(row._mapping)
        if customer_id is not None and not (
            order.customer_id == customer_id
            or (
                order.state in _VISIBLE_TO_PAYEE
                and self._owner(conn, order.payee_account_id) == customer_id
            )
        ):
            raise errors.PaymentNotFound(f"no payment {payment_id}")
        return order

    def search(
        self,
        conn: Connection,
        *,
        customer_id: str | None = None,
        filters: PaymentFilter = PaymentFilter(),
        cursor: str | None = None,
        limit: int = 20,
    ) -> Page[PaymentOrder]:
        """All payments (back office, CLI), optionally of one initiating customer."""
        o = t.payment_orders
        query = select(o)
        if customer_id is not None:
            query = query.where(o.c.customer_id == customer_id)
        return self._page(conn, query, filters, cursor, limit)

    def completed_between(
        self, conn: Connection, since: datetime, until: datetime
    ) -> list[tuple[str, str]]:
        """``(payment id, serial number)`` of every payment in a final state
        created in ``[since, until)``, by id: the population an internal-audit
        sample is drawn from (AUD-5)."""
        o = t.payment_orders
        rows = conn.execute(
            select(o.c.id, o.c.serial_no)
            .where(
                o.c.created_at >= since,
                o.c.created_at < until,
                o.c.state.in_([state.value for state in PaymentState if state.final]),
            )
            .order_by(o.c.id)
        )
        return [(row.id, row.serial_no) for row in rows]

    def history(
        self,
        conn: Connection,
        customer: Customer,
        *,
        filters: PaymentFilter = PaymentFilter(),
        cursor: str | None = None,
        limit: int = 20,
    ) -> Page[PaymentOrder]:
        """The customer's payments, sent and received, newest first (PAY-7)."""
        o = t.payment_orders
        # The payee sees a payment once it is under way, not the payer's quotes.
        query = select(o).where(
            (o.c.customer_id == customer.id)
            | (
                (o.c.payee_account_id == customer.account_id)
                & o.c.state.in_([state.value for state in _VISIBLE_TO_PAYEE])
            )
        )
        return self._page(conn, query, filters, cursor, limit)

    def _page(
        self,
        conn: Connection,
        query: Select[Any],
        filters: PaymentFilter,
        cursor: str | None,
        limit: int,
    ) -> Page[PaymentOrder]:
        check_limit(limit)
        o = t.payment_orders
        if filters.state is not None:
            query = query.where(o.c.state == filters.state.value)
        if filters.kind is not None:
            query = query.where(o.c.kind == filters.kind.value)
        if filters.created_from is not None:
            query = query.where(o.c.created_at >= filters.created_from)
        if filters.created_to is not None:
            query = query.where(o.c.created_at < filters.created_to)
        if cursor:
            query = query.where(o.c.id < cursor)
        rows = conn.execute(query.order_by(o.c.id.desc()).limit(limit + 1))
        return page_of([order_from_row(r._mapping) for r in rows], limit, lambda p: p.id)

    def events(self, conn: Connection, payment_id: str) -> list[PaymentEvent]:
        e = t.payment_events
        rows = conn.execute(select(e).where(e.c.payment_id == payment_id).order_by(e.c.seq))
        return [
            PaymentEvent(
                r.payment_id,
                r.seq,
                PaymentState(r.from_state) if r.from_state else None,
                PaymentState(r.to_state),
                r.actor,
                r.note,
                r.at,
            )
            for r in rows
        ]

    # --------------------------------------------------------------- internals

    def _require_active(self, customer: Customer) -> None:
        if customer.status is CustomerStatus.FROZEN:
            raise errors.AccountFrozen("your account is frozen; no payments can be made")
        if customer.status is CustomerStatus.CLOSED:
            raise errors.AccountClosed("your account is closed")

    def _load(
        self, conn: Connection, payment_id: str, *, customer_id: str | None = None
    ) -> _Change:
        o = t.payment_orders
        row = conn.execute(select(o).where(o.c.id == payment_id).with_for_update()).first()
        if row is None or (customer_id is not None and row.customer_id != customer_id):
            raise errors.PaymentNotFound(f"no payment {payment_id}")
        order = order_from_row(row._mapping)
        seq = conn.execute(
            select(func.coalesce(func.max(t.payment_events.c.seq), 0)).where(
                t.payment_events.c.payment_id == payment_id
            )
        ).scalar_one()
        return _Change(order, new=False, loaded_state=order.state, next_seq=int(seq) + 1)

    def _flush(self, conn: Connection, change: _Change) -> PaymentOrder:
        """Write one payment's changes: the order, its events, its notices —
        together, in one round trip where the database allows."""
        order = change.order
        row = _row(order)
        if not change.new:
            o = t.payment_orders
            result = conn.execute(
                update(o)
                .where(
                    o.c.account_id == order.account_id,
                    o.c.id == order.id,
                    o.c.state == (change.loaded_state or order.state).value,
                )
                .values({k: v for k, v in row.items() if k not in ("account_id", "id")})
            )
            if result.rowcount != 1:
                raise errors.InvalidTransition(f"payment {order.id} changed concurrently")
        try:
            with pipeline(conn):
                if change.new:
                    _INSERT_ORDER.run(conn, row)
                if change.events:
                    _INSERT_EVENT.many(conn, change.events)
                if change.notes:
                    self.notifications.enqueue_many(conn, change.notes)
        except Exception as exc:
            if change.new and is_unique_violation(exc) and "serial_no" in str(exc):
                # Two orders drew the same serial in the same millisecond: run
                # the whole transaction again, which draws a new one.
                raise RetryTransactionError(f"serial number {order.serial_no} taken") from exc
            raise
        change.events, change.notes = [], []
        change.new, change.loaded_state = False, order.state
        return order

    def _owner(self, conn: Connection, account_id: str) -> str | None:
        """The customer owning a ledger account (immutable, so from the ledger's cache)."""
        return self.ledger.static_accounts(conn, [account_id])[account_id].owner_id

    def _transit(self, conn: Connection) -> str:
        return self.ledger.account_id_by_code(conn, TRANSIT)

    def _fees(self, conn: Connection) -> str:
        return self.ledger.account_id_by_code(conn, FEE_INCOME)

    def _bank_clearing(self, conn: Connection, bank_code: str) -> str:
        return self.ledger.account_id_by_code(conn, bank_clearing_code(bank_code))

    def open_internal_accounts(self, conn: Connection) -> None:
        """Open the internal accounts payments book through (idempotent)."""
        for account_type, code, name in internal_accounts(self.banks):
            self.ledger.internal_account(conn, account_type, code, name=name)


TRANSIT = "transit"
FEE_INCOME = "fee_income"
SUSPENSE = "suspense"


def bank_clearing_code(bank_code: str) -> str:
    return f"bank_clearing:{bank_code}"


def internal_accounts(banks: Mapping[str, object]) -> list[tuple[AccountType, str, str]]:
    accounts = [
        (AccountType.TRANSIT, TRANSIT, "payments in transit"),
        (AccountType.FEE_INCOME, FEE_INCOME, "fee income"),
        (AccountType.SUSPENSE, SUSPENSE, "suspense: differences under investigation"),
    ]
    for code in sorted(banks):
        accounts.append((AccountType.BANK_CLEARING, bank_clearing_code(code), f"{code} clearing"))
        accounts.append(
            (AccountType.BANK_SETTLEMENT, f"bank_settlement:{code}", f"{code} reserve account")
        )
    return accounts


def needs_code(order: PaymentOrder, threshold_fen: int) -> bool:
    """PAY-4: payments from the wallet at or above the threshold need a one-time
    code. A top-up does not: the bank authenticates quick-pay debits itself
    under the signed agreement, and the money only moves to the customer's own
    wallet."""
    return order.kind is not PaymentKind.TOPUP and order.amount >= threshold_fen


def _code_hash(payment_id: str, code: str) -> str:
    return hashlib.sha256(f"{payment_id}:{code}".encode()).hexdigest()


def _normal(name: str) -> str:
    return "".join(name.split()).casefold()


def _row(order: PaymentOrder) -> dict[str, Any]:
    row = {name: getattr(order, name) for name in order.__dataclass_fields__}
    for key in ("kind", "state", "scenario", "mode", "fee_bearer"):
        row[key] = row[key].value
    return row


def order_from_row(r: RowMapping) -> PaymentOrder:
    values = dict(r)
    values["kind"] = PaymentKind(values["kind"])
    values["state"] = PaymentState(values["state"])
    values["scenario"] = Scenario(values["scenario"])
    values["mode"] = Mode(values["mode"])
    values["fee_bearer"] = FeeBearer(values["fee_bearer"])
    return PaymentOrder(**values)
