"""Password reset codes: SHA-256 of each code (never the code), its user, expiry and use.

Revision ID: auth_0002
Revises: auth_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0002"
down_revision = "auth_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_password_resets",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("request_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("use_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("auth_password_resets_user", "auth_password_resets", ["user_id", "request_time_us"])
    op.create_index("auth_password_resets_expiry", "auth_password_resets", ["expire_time_us"])


def downgrade() -> None:
    op.drop_index("auth_password_resets_expiry", "auth_password_resets")
    op.drop_index("auth_password_resets_user", "auth_password_resets")
    op.drop_table("auth_password_resets")
