"""Staff passwords, TOTP, sessions, roles, dual control, behaviour alerts (SEC-4 … SEC-8, SEC-13).

The comma-separated ``staff_members.roles`` becomes one ``staff_roles`` row
per known role (granted by ``migration:0006``; conflicting pairs are kept and
show up flagged in the permission review). Staff API tokens are revoked:
staff now sign in with password and TOTP, which an administrator issues.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tongbao.storage.ddl import drop_append_only, make_append_only

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KNOWN_ROLES = {
    "operator",
    "reviewer",
    "risk_officer",
    "compliance_officer",
    "auditor",
    "customer_service",
    "administrator",
}
_members = sa.table(
    "staff_members",
    sa.column("id", sa.String(40)),
    sa.column("roles", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_roles = sa.table(
    "staff_roles",
    sa.column("staff_id", sa.String(40)),
    sa.column("role", sa.String(30)),
    sa.column("granted_at", sa.DateTime(timezone=True)),
    sa.column("granted_by", sa.String(60)),
)


def upgrade() -> None:
    with op.batch_alter_table("staff_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("totp_secret", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("left_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "staff_roles",
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=60), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("staff_id", "role", name=op.f("pk_staff_roles")),
    )
    conn = op.get_bind()
    grants = [
        {
            "staff_id": row.id,
            "role": role,
            "granted_at": row.created_at,
            "granted_by": "migration:0006",
        }
        for row in conn.execute(sa.select(_members.c.id, _members.c.roles, _members.c.created_at))
        for role in sorted({r.strip() for r in (row.roles or "").split(",")} & KNOWN_ROLES)
    ]
    if grants:
        conn.execute(sa.insert(_roles), grants)
    with op.batch_alter_table("staff_members", schema=None) as batch_op:
        batch_op.drop_column("roles")
    conn.execute(
        sa.text(
            "UPDATE api_tokens SET revoked_at = :now "
            "WHERE principal_type = 'staff' AND revoked_at IS NULL"
        ).bindparams(sa.bindparam("now", datetime.now(UTC), type_=sa.DateTime(timezone=True)))
    )

    op.create_table(
        "staff_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_ip", sa.String(length=45), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_staff_sessions")),
    )
    op.create_index("ix_staff_sessions_staff_id", "staff_sessions", ["staff_id"])

    op.create_table(
        "dual_control_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operation", sa.String(length=40), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=40), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.String(length=500), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("failure_code", sa.String(length=40), nullable=True),
        sa.Column("failure_detail", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dual_control_requests")),
    )
    op.create_index(
        "ix_dual_control_requests_state_expires_at",
        "dual_control_requests",
        ["state", "expires_at"],
    )
    op.create_index(
        "ix_dual_control_requests_requested_by", "dual_control_requests", ["requested_by"]
    )

    op.create_table(
        "staff_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_events")),
    )
    op.create_index("ix_staff_events_staff_id_kind_at", "staff_events", ["staff_id", "kind", "at"])

    op.create_table(
        "staff_permission_use",
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("permission", sa.String(length=40), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("staff_id", "permission", name=op.f("pk_staff_permission_use")),
    )

    op.create_table(
        "staff_alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_alerts")),
    )
    op.create_index(
        "ix_staff_alerts_staff_id_kind_raised_at",
        "staff_alerts",
        ["staff_id", "kind", "raised_at"],
    )

    op.create_table(
        "policy_settings",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=60), nullable=False),
        sa.Column("approved_by", sa.String(length=60), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "version", name=op.f("pk_policy_settings")),
    )
    make_append_only("policy_settings")


def downgrade() -> None:
    drop_append_only("policy_settings")
    op.drop_table("policy_settings")
    op.drop_index("ix_staff_alerts_staff_id_kind_raised_at", "staff_alerts")
    op.drop_table("staff_alerts")
    op.drop_table("staff_permission_use")
    op.drop_index("ix_staff_events_staff_id_kind_at", "staff_events")
    op.drop_table("staff_events")
    op.drop_index("ix_dual_control_requests_requested_by", "dual_control_requests")
    op.drop_index("ix_dual_control_requests_state_expires_at", "dual_control_requests")
    op.drop_table("dual_control_requests")
    op.drop_index("ix_staff_sessions_staff_id", "staff_sessions")
    op.drop_table("staff_sessions")

    with op.batch_alter_table("staff_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("roles", sa.Text(), nullable=True))
    conn = op.get_bind()
    held: dict[str, list[str]] = {}
    for row in conn.execute(sa.select(_roles.c.staff_id, _roles.c.role)):
        held.setdefault(row.staff_id, []).append(row.role)
    for staff_id in [r.id for r in conn.execute(sa.select(_members.c.id))]:
        conn.execute(
            sa.update(_members)
            .where(_members.c.id == staff_id)
            .values(roles=",".join(sorted(held.get(staff_id, []))))
        )
    op.drop_table("staff_roles")
    with op.batch_alter_table("staff_members", schema=None) as batch_op:
        batch_op.alter_column("roles", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("left_at")
        batch_op.drop_column("last_login_at")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_secret")
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("password_hash")
