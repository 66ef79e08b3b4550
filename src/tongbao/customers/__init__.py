"""Customers: records, their ledger account, bound bank cards."""

from tongbao.customers.service import (
    BankCard,
    Consent,
    Customer,
    CustomerKind,
    Customers,
    CustomerStatus,
)

__all__ = ["BankCard", "Consent", "Customer", "CustomerKind", "CustomerStatus", "Customers"]
