"""Imports every capability's tables so the shared metadata is complete.

Alembic's environment and the schema-drift test load this module.
"""

from tongbao.audit import tables as audit_tables  # noqa: F401
from tongbao.auth import tables as auth_tables  # noqa: F401
from tongbao.banking import tables as banking_tables  # noqa: F401
from tongbao.calendar import tables as calendar_tables  # noqa: F401
from tongbao.customers import tables as customers_tables  # noqa: F401
from tongbao.idempotency import tables as idempotency_tables  # noqa: F401
from tongbao.ledger import tables as ledger_tables  # noqa: F401
from tongbao.notifications import tables as notifications_tables  # noqa: F401
from tongbao.ops import tables as ops_tables  # noqa: F401
from tongbao.payments import tables as payments_tables  # noqa: F401
from tongbao.security import tables as security_tables  # noqa: F401
from tongbao.storage.metadata import metadata

__all__ = ["metadata"]
