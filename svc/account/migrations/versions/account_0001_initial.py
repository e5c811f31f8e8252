"""Account tables: user accounts over ledger accounts, and freezes.

Revision ID: account_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "account_0001"
down_revision = None
branch_labels = ("account",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_accounts",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("ledger_account_id", sa.String(36), nullable=False, unique=True),
        sa.Column("ledger_account_code", sa.String(256), nullable=False),
        sa.Column("frozen_account_id", sa.String(36), nullable=False, unique=True),
        sa.Column("frozen_account_code", sa.String(256), nullable=False),
        sa.Column("amount_freezes", sa.Integer, nullable=False),
        sa.Column("account_freezes", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("close_time_us", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("user_id", "asset", "kind", name="uq_account_accounts_owner"),
    )
    op.create_table(
        "account_freezes",
        sa.Column("freeze_id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("scope", sa.SmallInteger, nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("original_amount", Amount, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("reason_detail", sa.String(1024), nullable=False),
        sa.Column("case_reference", sa.String(128), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("hold_entry_id", sa.String(128), nullable=False),
        sa.Column("hold_version", sa.Integer, nullable=False),
        sa.Column("placed_by", sa.String(128), nullable=False),
        sa.Column("action_request_id", sa.String(64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=True),
        sa.Column("end_time_us", sa.BigInteger, nullable=True),
        sa.Column("ended_by", sa.String(128), nullable=False),
        sa.Column("end_note", sa.String(1024), nullable=False),
        sa.Column("capture_entry_id", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_account_freezes_account", "account_freezes", ["account_id", "create_time_us"])
    op.create_index("ix_account_freezes_expiry", "account_freezes", ["state", "expire_time_us"])


def downgrade() -> None:
    op.drop_table("account_freezes")
    op.drop_table("account_accounts")
