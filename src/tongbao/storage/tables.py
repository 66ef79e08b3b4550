"""Imports every capability's tables so the shared metadata is complete.

Alembic's environment and the schema-drift test load this module.
"""

from tongbao.ledger import tables as ledger_tables  # noqa: F401
from tongbao.storage.metadata import metadata

__all__ = ["metadata"]
