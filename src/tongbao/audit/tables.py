"""Audit tables. Only :mod:`tongbao.audit` reads or writes them.

``audit_records`` is append-only (database triggers refuse UPDATE and
DELETE, see :mod:`tongbao.storage.ddl`); the hash chain shows it if someone
with more rights than the application edits it anyway. ``audit_chain_head``
is one row, the chain's newest seq and hash: every append locks it, which
makes appends from concurrent transactions one linear, gap-free chain.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
)

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

HASH = String(64)  # hex of a 256-bit digest (SHA-256 or SM3)

records = Table(
    "audit_records",
    metadata,
    # Assigned under the chain-head lock, never by a sequence: a sequence
    # leaves gaps on rollback, and a gap must mean "deleted".
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("source_ip", String(45)),
    Column("before_digest", HASH),
    Column("after_digest", HASH),
    Column("details", Text, nullable=False),
    Column("algorithm", String(10), nullable=False),
    Column("prev_hash", HASH, nullable=False),
    Column("hash", HASH, nullable=False),
    # Searches are newest first (seq descending) within an actor, action or target.
    Index("ix_audit_records_actor_seq", "actor", "seq"),
    Index("ix_audit_records_action_seq", "action", "seq"),
    Index("ix_audit_records_target_seq", "target", "seq"),
    Index("ix_audit_records_at", "at"),
)

chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", HASH, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# --- internal-audit samples (AUD-5) ------------------------------------------------

samples = Table(
    "audit_samples",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("period_start", UtcDateTime, nullable=False),
    Column("period_end", UtcDateTime, nullable=False),
    Column("population", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("seed", String(64), nullable=False),  # hex; repeats the draw
    Column("drawn_by", String(80), nullable=False),
    Column("drawn_at", UtcDateTime, nullable=False),
    CheckConstraint("size >= 1 AND size <= population", name="size_in_population"),
)

sample_items = Table(
    "audit_sample_items",
    metadata,
    Column("sample_id", String(40), ForeignKey("audit_samples.id"), primary_key=True),
    Column("payment_id", String(40), primary_key=True),
    Column("serial_no", String(32), nullable=False),
    Column("state", String(12), nullable=False),
    Column("finding", Text),
    Column("deadline", UtcDateTime),
    Column("reviewed_by", String(80)),
    Column("reviewed_at", UtcDateTime),
    Column("rectification", Text),
    Column("rectified_by", String(80)),
    Column("rectified_at", UtcDateTime),
    # The report looks for open problems past their deadline.
    Index("ix_audit_sample_items_state_deadline", "state", "deadline"),
)
