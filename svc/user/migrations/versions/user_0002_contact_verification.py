"""Contact verification: the pending email address or phone number of a change, and one live
verification code per user and channel (its SHA-256, never the code), with its rate limits.

Revision ID: user_0002
Revises: user_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "user_0002"
down_revision = "user_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_users") as table:
        table.add_column(sa.Column("pending_email", sa.String(254), nullable=False, server_default=""))
        table.add_column(sa.Column("pending_phone", sa.String(16), nullable=False, server_default=""))
    op.create_table(
        "user_verification_codes",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("channel", sa.SmallInteger, primary_key=True),
        sa.Column("destination", sa.String(254), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("send_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("day_start_us", sa.BigInteger, nullable=False),
        sa.Column("day_count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_verification_codes")
    with op.batch_alter_table("user_users") as table:
        table.drop_column("pending_phone")
        table.drop_column("pending_email")
