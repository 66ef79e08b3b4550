"""Error transactions (PAY-13): payments whose ledger movements are not what
their state says — a wrong amount, a duplicate or missing debit.

For every payment the expected net movement per account follows from its
kind, state and split (invariant P2 of ``docs/invariants.md``); the actual
one is summed from the ledger entries carrying the payment's id. Any
difference is an error transaction for the back office to correct with a
reversal. ``tongbao tx verify`` runs this and exits 1 if it finds any.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from tongbao.ledger import Ledger
from tongbao.payments import tables as t
from tongbao.payments.model import PaymentKind, PaymentOrder, PaymentState
from tongbao.payments.service import FEE_INCOME, TRANSIT, order_from_row

TARGET_ERROR_RATE = 0.0005
"""PAY-13: at most 0.05 % of transactions in error."""


@dataclass(frozen=True, slots=True)
class ErrorTransaction:
    payment_id: str
    serial_no: str
    state: str
    expected: dict[str, int]
    actual: dict[str, int]


@dataclass(frozen=True, slots=True)
class PaymentsReport:
    checked: int
    errors: tuple[ErrorTransaction, ...] = field(default_factory=tuple)

    @property
    def error_rate(self) -> float:
        return len(self.errors) / self.checked if self.checked else 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def expected_movement(
    order: PaymentOrder, *, fee_account: str, transit: str, withdrawal_debited: bool
) -> dict[str, int]:
    """The net signed posting per account a payment in its state must have made. Pure."""
    s = order.split
    moves: dict[str, int] = {}

    def add(account: str, amount: int) -> None:
        moves[account] = moves.get(account, 0) + amount

    if order.state is PaymentState.SUCCEEDED:
        add(order.payer_account_id, s.debit)
        add(order.payee_account_id, -s.credit)
        if s.fee:
            add(fee_account, -s.fee)
    elif order.state is PaymentState.PROCESSING and withdrawal_debited:
        add(order.payer_account_id, s.debit)
        add(transit, -s.debit)
    return {account: amount for account, amount in moves.items() if amount}


def verify_payments(conn: Connection, ledger: Ledger) -> PaymentsReport:
    fee_account = ledger.account_id_by_code(conn, FEE_INCOME)
    transit = ledger.account_id_by_code(conn, TRANSIT)
    nets = ledger.net_movements(conn)
    errors = []
    checked = 0
    for row in conn.execute(select(t.payment_orders).order_by(t.payment_orders.c.id)):
        order = order_from_row(row._mapping)
        checked += 1
        debited = order.kind is PaymentKind.WITHDRAWAL and order.bank_reference is not None
        expected = expected_movement(
            order, fee_account=fee_account, transit=transit, withdrawal_debited=debited
        )
        actual = nets.get(order.id, {})
        if actual != expected:
            errors.append(
                ErrorTransaction(order.id, order.serial_no, order.state.value, expected, actual)
            )
    return PaymentsReport(checked, tuple(errors))
