"""The simulated bank's own book. Only :mod:`tongbao.banking.simulated` touches these.

They live in the platform's database for convenience, but the simulator
reads and writes them in its own transactions, never in the platform's: a
real bank is not part of our transactions either.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, Index, String, Table

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

simbank_accounts = Table(
    "simbank_accounts",
    metadata,
    Column("number", String(40), primary_key=True),  # card number, or the reserve account number
    Column("bank_code", String(20), nullable=False),
    Column("kind", String(10), nullable=False),  # card | reserve
    Column("holder_name", String(100), nullable=False),
    Column("phone", String(20)),
    Column("balance", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # active | frozen | closed
    Column("expires_on", Date),
    Column("created_at", UtcDateTime, nullable=False),
)

simbank_agreements = Table(
    "simbank_agreements",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("card_number", String(40), nullable=False, index=True),
    Column("institution", String(40), nullable=False),
    Column("status", String(10), nullable=False),  # active | cancelled
    Column("created_at", UtcDateTime, nullable=False),
    Column("cancelled_at", UtcDateTime),
)

simbank_instructions = Table(
    "simbank_instructions",
    metadata,
    Column("id", String(64), primary_key=True),  # the platform's instruction id
    Column("direction", String(6), nullable=False),  # debit (pull from card) | credit (pay to card)
    Column("agreement_id", String(64), nullable=False),
    Column("card_number", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # accepted | settled | rejected | failed
    Column("reason", String(200)),
    Column("bank_reference", String(40), nullable=False, unique=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("settle_after", UtcDateTime),
    Column("settled_at", UtcDateTime),
    # SEC-12 non-repudiation: what the platform signed, and its signature, as received.
    # Empty on instructions received before signing began (revision 0010).
    Column("memo", String(140)),
    Column("bank_code", String(20)),
    Column("signed_at", UtcDateTime),
    Column("signature_algorithm", String(10)),
    Column("key_id", String(16)),
    Column("signature", String(100)),  # base64
    Index("ix_simbank_instructions_status_settle_after", "status", "settle_after"),
)

simbank_platform_keys = Table(
    "simbank_platform_keys",
    metadata,
    # Public keys institutions registered with the bank to sign their instructions.
    Column("key_id", String(16), primary_key=True),
    Column("institution", String(40), nullable=False),
    Column("algorithm", String(10), nullable=False),
    Column("public_key", String(64), nullable=False),  # hex of the raw key
    Column("registered_at", UtcDateTime, nullable=False),
)

simbank_statement_lines = Table(
    "simbank_statement_lines",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("bank_code", String(20), nullable=False),
    Column("value_date", Date, nullable=False),
    Column("instruction_id", String(64)),
    Column("bank_reference", String(40)),
    Column("direction", String(6), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("description", String(200), nullable=False),
    # What the simulator deliberately got wrong on this line (for drills and tests).
    Column("distortion", String(40)),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_simbank_statement_lines_value_date", "bank_code", "value_date"),
)
