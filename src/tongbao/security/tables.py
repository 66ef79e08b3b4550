"""The key ring, the vulnerability register and the penetration tests (SEC-10).
Only :mod:`tongbao.security` reads or writes these tables.

No table holds a usable key: the ring's root secret and every key version
(key-encryption key, KEK) are wrapped by the master key, which lives outside
the database (a file, a KMS or an HSM); every data key (DEK) is wrapped by a
key version. See ``docs/security.md``, "Encryption at rest".
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
)

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

key_ring = Table(
    "key_ring",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),  # always 1
    # Fingerprint of the master key that wraps the ring: a different master
    # key is named at start-up instead of producing garbage.
    Column("master_key_id", String(32), nullable=False),
    # Fixed when the ring is made: blind indexes and derived keys must never change.
    Column("digest_algorithm", String(10), nullable=False),
    Column("wrapped_root_key", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("id = 1", name="one_ring"),
)

key_versions = Table(
    "key_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("cipher", String(20), nullable=False),  # of the KEK and of the data keys under it
    Column("status", String(10), nullable=False),  # active | retired
    Column("wrapped_key", LargeBinary),  # NULL once retired: the KEK is destroyed
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("dek_id", String(40), primary_key=True),
    Column("subject", String(100), nullable=False),  # "<record class>:<record id>"
    Column("record_class", String(30), nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("cipher", String(20), nullable=False),
    Column("wrapped_key", LargeBinary),  # NULL once shredded (AUD-6)
    Column("created_at", UtcDateTime, nullable=False),
    Column("shredded_at", UtcDateTime),
    Index("ix_data_keys_subject", "subject", "dek_id"),
    Index("ix_data_keys_kek_version", "kek_version", "subject"),
)

# --- vulnerability register and penetration tests (SEC-10) --------------------------

pentests = Table(
    "pentests",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tested_on", Date, nullable=False),
    Column("scope", Text, nullable=False),
    Column("tester", String(200), nullable=False),
    Column("summary", Text),
    Column("recorded_by", String(80), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_pentests_tested_on", "tested_on"),
)

vulnerabilities = Table(
    "vulnerabilities",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("source", String(12), nullable=False),  # deps-check | pentest | staff
    Column("title", Text, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("package", String(200)),
    Column("version", String(100)),
    Column("advisory_id", String(100)),
    Column("fixed_in", String(100)),
    # deps-check findings: advisory + package + version, registered once.
    Column("fingerprint", String(400), unique=True),
    Column("detail", Text),
    Column("pentest_id", String(40), ForeignKey("pentests.id")),
    Column("reported_by", String(80), nullable=False),
    Column("found_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # open | fixed | accepted-risk
    Column("closed_by", String(80)),
    Column("closed_at", UtcDateTime),
    Column("resolution", Text),
    # The report looks for open ones past their deadline.
    Index("ix_vulnerabilities_status_deadline", "status", "deadline"),
)
