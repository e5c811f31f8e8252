"""User tables: users with their unique login identifiers, and status changes.

Revision ID: user_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "user_0001"
down_revision = None
branch_labels = ("user",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_users",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("phone", sa.String(16), nullable=False),
        sa.Column("email_key", sa.String(254), nullable=True),
        sa.Column("phone_key", sa.String(16), nullable=True),
        sa.Column("email_verified", sa.Boolean, nullable=False),
        sa.Column("phone_verified", sa.Boolean, nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("country_of_residence", sa.String(2), nullable=False),
        sa.Column("marketing_consent", sa.Boolean, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("reasons", sa.String(64), nullable=False),
        sa.Column("accepted_terms_version", sa.String(32), nullable=False),
        sa.Column("referrer_user_id", sa.String(36), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("close_time_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("email_key", name="uq_user_users_email_key"),
        sa.UniqueConstraint("phone_key", name="uq_user_users_phone_key"),
    )
    op.create_index("ix_user_users_created", "user_users", ["create_time_us", "user_id"])
    op.create_index("ix_user_users_email", "user_users", ["email"])
    op.create_index("ix_user_users_phone", "user_users", ["phone"])
    op.create_table(
        "user_status_changes",
        sa.Column("change_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("previous_status", sa.SmallInteger, nullable=False),
        sa.Column("new_status", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("actor_type", sa.SmallInteger, nullable=False),
        sa.Column("actor_id", sa.String(128), nullable=False),
        sa.Column("approval_id", sa.String(128), nullable=False),
        sa.Column("change_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_user_status_changes_user", "user_status_changes", ["user_id", "version"])


def downgrade() -> None:
    op.drop_table("user_status_changes")
    op.drop_table("user_users")
