"""API credentials, staff, roles, sessions, dual control and behaviour monitoring.

Only :mod:`tongbao.auth` reads or writes these."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, text

from tongbao.storage.metadata import metadata
from tongbao.storage.types import UtcDateTime

ID = String(40)

api_tokens = Table(
    "api_tokens",
    metadata,
    # SHA-256 of the token: a stolen table does not yield usable tokens.
    Column("token_hash", String(64), primary_key=True),
    Column("principal_type", String(10), nullable=False),
    Column("principal_id", ID, nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Index("ix_api_tokens_principal", "principal_type", "principal_id"),
)

staff_members = Table(
    "staff_members",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", String(60), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("status", String(10), nullable=False),  # active | left
    # argon2id (AUTH-9); NULL until credentials are issued.
    Column("password_hash", String(200)),
    # NULL: set by an administrator, must be changed at first login (AUTH-6).
    Column("password_changed_at", UtcDateTime),
    # Ciphertext from the key ring (SEC-1); the clear secret is shown once at enrolment.
    Column("totp_secret", Text),
    Column("totp_last_step", BigInteger),  # newest TOTP step accepted: no replays
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", UtcDateTime),
    Column("last_login_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("left_at", UtcDateTime),
)

# Roles held now; their history (grants, revocations) is in the audit log.
staff_roles = Table(
    "staff_roles",
    metadata,
    Column("staff_id", ID, primary_key=True),
    Column("role", String(30), primary_key=True),
    Column("granted_at", UtcDateTime, nullable=False),
    Column("granted_by", String(60), nullable=False),  # an actor, e.g. staff:<id>
    Column("request_id", ID),  # the dual-control request that granted it
)

staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("staff_id", ID, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("source_ip", String(45)),
    Column("ended_at", UtcDateTime),
    Index("ix_staff_sessions_staff_id", "staff_id"),
)

dual_control_requests = Table(
    "dual_control_requests",
    metadata,
    Column("id", ID, primary_key=True),
    Column("operation", String(40), nullable=False),
    Column("params", Text, nullable=False),  # JSON, validated and normalised
    Column("reason", String(500), nullable=False),
    Column("state", String(10), nullable=False),
    Column("requested_by", ID, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("decided_by", ID),
    Column("decided_at", UtcDateTime),
    Column("decision_note", String(500)),
    Column("result", Text),  # JSON: what the execution did
    Column("failure_code", String(40)),
    Column("failure_detail", String(500)),
    Index("ix_dual_control_requests_state_expires_at", "state", "expires_at"),
    Index("ix_dual_control_requests_requested_by", "requested_by"),
)

# SEC-8: what staff did that behaviour monitoring counts.
staff_events = Table(
    "staff_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("staff_id", ID, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("weight", Integer, nullable=False),  # e.g. records read
    Column("detail", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_staff_events_staff_id_kind_at", "staff_id", "kind", "at"),
)

staff_permission_use = Table(
    "staff_permission_use",
    metadata,
    Column("staff_id", ID, primary_key=True),
    Column("permission", String(40), primary_key=True),
    Column("first_used_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=False),
)

staff_alerts = Table(
    "staff_alerts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("staff_id", ID, nullable=False),
    Column("kind", String(30), nullable=False),
    Column("detail", String(300), nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Index("ix_staff_alerts_staff_id_kind_raised_at", "staff_id", "kind", "raised_at"),
)

# SEC-9: where each staff login attempt came from (the place as the shipped
# geolocation data knew it then); successful ones are the member's baseline.
staff_login_locations = Table(
    "staff_login_locations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("staff_id", ID, nullable=False),
    Column("ip", String(45)),
    Column("network", String(10), nullable=False),  # public | internal | unknown
    Column("country", String(40)),
    Column("province", String(40)),
    Column("city", String(40)),
    Column("outcome", String(10), nullable=False),  # ok | refused
    Column("at", UtcDateTime, nullable=False),
    Index("ix_staff_login_locations_staff_id_at", "staff_id", "at"),
)
