"""Ledger tables: sequence state, chart of accounts with balances, entries, postings, balance history.

Revision ID: ledger_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0001"
down_revision = None
branch_labels = ("ledger",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def _balance_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(name, Amount, nullable=False)
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
    ]


def upgrade() -> None:
    state = op.create_table(
        "ledger_state",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("last_post_time_us", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "last_sequence": 0, "last_post_time_us": 0}])
    op.create_table(
        "ledger_accounts",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("code", sa.String(256), nullable=False, unique=True),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("balance_constraint", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("debits_blocked", sa.Boolean, nullable=False),
        sa.Column("credits_blocked", sa.Boolean, nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("owner_user_id", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("chain_address", sa.String(42), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("close_time_us", sa.BigInteger, nullable=True),
        *_balance_columns(),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_accounts_asset_code", "ledger_accounts", ["asset", "code"])
    op.create_index("ix_ledger_accounts_owner_user_id", "ledger_accounts", ["owner_user_id"])
    op.create_table(
        "ledger_entries",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entry_id", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("post_time_us", sa.BigInteger, nullable=False),
        sa.Column("pending_entry_id", sa.String(128), nullable=False),
        sa.Column("corrects_entry_id", sa.String(128), nullable=False),
        sa.Column("timeout_ms", sa.BigInteger, nullable=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("chain_transfer", sa.LargeBinary, nullable=False),
        sa.Column("entry_metadata", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("pending_status", sa.SmallInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=True),
        sa.Column("resolved_by_entry_id", sa.String(128), nullable=False),
        sa.Column("resolve_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_ledger_entries_post_time_us", "ledger_entries", ["post_time_us"])
    op.create_index("ix_ledger_entries_pending", "ledger_entries", ["pending_status", "expire_time_us"])
    op.create_table(
        "ledger_postings",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("position", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("account_code", sa.String(256), nullable=False),
        sa.Column("side", sa.SmallInteger, nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("memo", sa.String(128), nullable=False),
    )
    op.create_table(
        "ledger_balance_history",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        *_balance_columns(),
    )


def downgrade() -> None:
    for table in (
        "ledger_balance_history",
        "ledger_postings",
        "ledger_entries",
        "ledger_accounts",
        "ledger_state",
    ):
        op.drop_table(table)
