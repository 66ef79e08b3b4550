"""Payments: orders, their state machine, fees, serial numbers, refunds."""

from tongbao.payments.model import (
    FAILURES,
    Mode,
    PaymentEvent,
    PaymentKind,
    PaymentOrder,
    PaymentState,
    Scenario,
)
from tongbao.payments.service import (
    PaymentFilter,
    PaymentRequest,
    Payments,
    VerificationResult,
)

__all__ = [
    "FAILURES",
    "Mode",
    "PaymentEvent",
    "PaymentFilter",
    "PaymentKind",
    "PaymentOrder",
    "PaymentRequest",
    "PaymentState",
    "Payments",
    "Scenario",
    "VerificationResult",
]
