"""Where staff login attempts came from, for the unusual-location alerts (SEC-9).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_login_locations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("staff_id", sa.String(length=40), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("network", sa.String(length=10), nullable=False),
        sa.Column("country", sa.String(length=40), nullable=True),
        sa.Column("province", sa.String(length=40), nullable=True),
        sa.Column("city", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_login_locations")),
    )
    op.create_index(
        "ix_staff_login_locations_staff_id_at", "staff_login_locations", ["staff_id", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_staff_login_locations_staff_id_at", "staff_login_locations")
    op.drop_table("staff_login_locations")
