"""Custody: which wallet addresses the chain gateway has been asked to watch, per chain.

Revision ID: custody_0002
Revises: custody_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "custody_0002"
down_revision = "custody_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "custody_watch_registrations",
        sa.Column("wallet_id", sa.String(36), primary_key=True),
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("register_time_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("custody_watch_registrations")
