"""Storage: the database handle, column types, shared metadata and migrations."""

from tongbao.storage.database import (
    Database,
    RetryTransactionError,
    is_retryable,
    is_unique_violation,
)
from tongbao.storage.metadata import metadata

__all__ = ["Database", "RetryTransactionError", "is_retryable", "is_unique_violation", "metadata"]
