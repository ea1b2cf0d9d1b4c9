"""The run store: runs, hash-chained entries, and the chain of run heads.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "golive_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("environment", sa.String(200)),
        sa.Column("release", sa.String(200)),
        sa.Column("version", sa.String(200)),
        sa.Column("triggered_by", sa.String(400)),
    )
    op.create_index("golive_runs_started_at", "golive_runs", ["started_at"])
    op.create_table(
        "golive_entries",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("v", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "golive_heads",
        sa.Column("pos", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("run_head", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("golive_heads_run_id", "golive_heads", ["run_id", "pos"])


def downgrade() -> None:
    op.drop_table("golive_heads")
    op.drop_table("golive_entries")
    op.drop_table("golive_runs")
