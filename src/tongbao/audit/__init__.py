"""Tamper-evident audit log (AUD-1 … AUD-4): one hash chain of records, signed
checkpoints outside the database, keyword search and CSV export.

Public API: :class:`AuditLog` (the service), :func:`verify`, the value types
in :mod:`tongbao.audit.model` and the checkpoint file. Other capabilities
record through ``platform.audit.record(conn, …)`` in their own transaction
and never touch the tables.
"""

from tongbao.audit.checkpoint_file import CheckpointFile, LoadedCheckpoints
from tongbao.audit.checkpoints import SIGNING_PURPOSE, Checkpoint, CheckpointSigner
from tongbao.audit.model import (
    AuditQuery,
    AuditRecord,
    AuditVerifyReport,
    BreakKind,
    ChainBreak,
    ChainHead,
    CheckpointProblem,
)
from tongbao.audit.service import AuditLog, verify

__all__ = [
    "SIGNING_PURPOSE",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "AuditVerifyReport",
    "BreakKind",
    "ChainBreak",
    "ChainHead",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointProblem",
    "CheckpointSigner",
    "LoadedCheckpoints",
    "verify",
]
