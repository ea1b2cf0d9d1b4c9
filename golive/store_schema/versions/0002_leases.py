"""Leases: one go-live (or rollback) at a time per environment, across processes and machines.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "golive_leases",
        sa.Column("environment", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(400), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("acquired_at", sa.String(40), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("golive_leases")
