"""Customers: records, their ledger account, bound bank cards."""

from tongbao.customers.service import (
    BankCard,
    Customer,
    CustomerKind,
    Customers,
    CustomerStatus,
)

__all__ = ["BankCard", "Customer", "CustomerKind", "CustomerStatus", "Customers"]
