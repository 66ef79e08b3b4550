"""Domain objects to response bodies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from tongbao.api import schemas as s
from tongbao.audit.sampling import Sample, SampleItem, SampleReport
from tongbao.customers import BankCard, Consent, Customer
from tongbao.ledger import Account, AccountBalance, StatementLine
from tongbao.notifications.local import LocalMessage
from tongbao.payments import PaymentOrder
from tongbao.platform import Platform
from tongbao.security.masking import mask_id_number, mask_name, mask_phone


def payment(
    platform: Platform, conn: Connection, order: PaymentOrder, *, expand_events: bool = False
) -> s.Payment:
    now = platform.clock.now()
    split = order.split
    events = None
    if expand_events:
        events = [
            s.Event(
                seq=e.seq,
                from_state=e.from_state,
                to_state=e.to_state,
                actor=e.actor,
                note=e.note,
                at=e.at,
            )
            for e in platform.payments.events(conn, order.id)
        ]
    fail = None
    if order.failure_code:
        fail = s.Failure(
            code=order.failure_code,
            message=order.failure_message or "",
            retry_hint=order.retry_hint,
        )
    return s.Payment(
        id=order.id,
        serial_no=order.serial_no,
        kind=order.kind,
        state=order.state,
        scenario=order.scenario,
        mode=order.mode,
        amount=s.Amount.of(order.amount),
        fee=s.Amount.of(order.fee),
        fee_bearer=order.fee_bearer,
        total_debit=s.Amount.of(split.debit),
        payee_receives=s.Amount.of(split.credit),
        currency=order.currency,
        payer=s.Party(account_id=order.payer_account_id, name=order.payer_name),
        payee=s.Party(account_id=order.payee_account_id, name=order.payee_name),
        card_id=order.card_id,
        purpose=order.purpose,
        failure=fail,
        review_reason=order.review_reason,
        execute_at=order.execute_at,
        expected_arrival_by=order.expected_arrival_by,
        bank_reference=order.bank_reference,
        original_payment_id=order.original_payment_id,
        refunded=s.Amount.of(order.refunded_amount),
        confirmation=s.Confirmation(
            status=order.confirmation(now),
            deadline=order.objection_deadline,
            acknowledged_at=order.acknowledged_at,
            objected_at=order.objected_at,
            objection_reason=order.objection_reason,
        ),
        created_at=order.created_at,
        updated_at=order.updated_at,
        completed_at=order.completed_at,
        events=events,
    )


def account(acct: Account, balance: AccountBalance) -> s.Account:
    return s.Account(
        id=acct.id,
        type=acct.type,
        currency=acct.currency,
        status=acct.status,
        balance=s.Balance(
            ledger=s.Amount.of(balance.ledger),
            held=s.Amount.of(balance.held),
            available=s.Amount.of(balance.available),
            incoming=s.Amount.of(balance.incoming),
        ),
        created_at=acct.created_at,
    )


def statement_line(line: StatementLine, *, credit_normal: bool) -> s.StatementLine:
    incoming = (line.amount < 0) if credit_normal else (line.amount > 0)
    return s.StatementLine(
        entry_id=line.entry_id,
        amount=s.Amount.of(abs(line.amount)),
        direction="in" if incoming else "out",
        balance_after=None if line.balance_after is None else s.Amount.of(line.balance_after),
        kind=line.kind,
        reference=line.reference,
        description=line.description,
        created_at=line.created_at,
    )


def me(c: Customer) -> s.Me:
    """A customer as the API shows them: personal data masked (SEC-3)."""
    return s.Me(
        id=c.id,
        kind=c.kind,
        name=c.display_name,
        phone=None if c.phone is None else mask_phone(c.phone),
        id_number=None if c.id_number is None else mask_id_number(c.id_number),
        status=c.status,
        account_id=c.account_id,
        privacy_policy_version=c.consented_policy_version,
    )


def consent(c: Consent) -> s.Consent:
    return s.Consent(
        id=c.id,
        document=c.document,
        version=c.version,
        accepted_at=c.accepted_at,
        channel=c.channel,
        withdrawn_at=c.withdrawn_at,
    )


def card(c: BankCard) -> s.Card:
    return s.Card(
        id=c.id,
        bank_code=c.bank_code,
        masked_number=c.masked_number,
        holder_name=mask_name(c.holder_name),
        expires_on=c.expires_on,
        status=c.status,
        created_at=c.created_at,
    )


def notification(m: LocalMessage) -> s.Notification:
    return s.Notification(
        id=m.id, channel=m.channel, kind=m.kind, text=m.text, delivered_at=m.delivered_at
    )


def audit_sample_item(sample_id: str, item: SampleItem, now: datetime) -> s.AuditSampleItem:
    return s.AuditSampleItem(
        sample_id=sample_id,
        payment_id=item.payment_id,
        serial_no=item.serial_no,
        state=item.state,
        finding=item.finding,
        deadline=item.deadline,
        overdue=item.overdue(now),
        reviewed_by=item.reviewed_by,
        reviewed_at=item.reviewed_at,
        rectification=item.rectification,
        rectified_by=item.rectified_by,
        rectified_at=item.rectified_at,
    )


def audit_sample(sample: Sample, now: datetime, *, with_items: bool = True) -> s.AuditSample:
    return s.AuditSample(
        id=sample.id,
        period_start=sample.period_start,
        period_end=sample.period_end,
        population=sample.population,
        size=sample.size,
        seed=sample.seed,
        drawn_by=sample.drawn_by,
        drawn_at=sample.drawn_at,
        items=[audit_sample_item(sample.id, i, now) for i in sample.items] if with_items else None,
    )


def audit_sample_report(report: SampleReport) -> s.AuditSampleReport:
    sample_id, now = report.sample.id, report.at
    return s.AuditSampleReport(
        generated_at=now,
        sample=audit_sample(report.sample, now),
        counts=report.counts,
        complete=report.complete,
        problems=[audit_sample_item(sample_id, i, now) for i in report.problems],
        overdue=[audit_sample_item(sample_id, i, now) for i in report.overdue],
    )
