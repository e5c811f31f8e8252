"""Wallet tables: wallets with their deposit addresses, address counters, internal transfers and
the unified history.

Revision ID: wallet_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "wallet_0001"
down_revision = None
branch_labels = ("wallet",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "wallet_wallets",
        sa.Column("wallet_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("address_lower", sa.String(42), nullable=False),
        sa.Column("derivation_path", sa.String(128), nullable=False),
        sa.Column("address_index", sa.BigInteger, nullable=False),
        sa.Column("custody_wallet_id", sa.String(36), nullable=False),
        sa.Column("xpub_fingerprint", sa.String(8), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("watched", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "chain", name="uq_wallet_wallets_owner"),
        sa.UniqueConstraint("address_lower", name="uq_wallet_wallets_address"),
        sa.UniqueConstraint("custody_wallet_id", "address_index", name="uq_wallet_wallets_index"),
    )
    op.create_index("ix_wallet_wallets_unwatched", "wallet_wallets", ["watched", "create_time_us"])
    op.create_table(
        "wallet_address_counters",
        sa.Column("custody_wallet_id", sa.String(36), primary_key=True),
        sa.Column("next_index", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wallet_transfers",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("from_user_id", sa.String(64), nullable=False),
        sa.Column("to_user_id", sa.String(64), nullable=False),
        sa.Column("from_display", sa.String(320), nullable=False),
        sa.Column("to_display", sa.String(320), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("memo", sa.String(140), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("ledger_entry_id", sa.String(128), nullable=False),
        sa.Column("reversal_entry_id", sa.String(128), nullable=False),
        sa.Column("reversed_by", sa.String(64), nullable=False),
        sa.Column("reverse_reason", sa.String(1000), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("reverse_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_wallet_transfers_sender", "wallet_transfers", ["from_user_id", "create_time_us"])
    op.create_index("ix_wallet_transfers_recipient", "wallet_transfers", ["to_user_id", "create_time_us"])
    op.create_table(
        "wallet_history",
        sa.Column("entry_id", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("source_state", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("fee_asset", sa.String(49), nullable=False),
        sa.Column("fee", Amount, nullable=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("counterparty_display", sa.String(320), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("confirmations", sa.Integer, nullable=False),
        sa.Column("required_confirmations", sa.Integer, nullable=False),
        sa.Column("memo", sa.String(140), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("complete_time_us", sa.BigInteger, nullable=True),
        sa.Column("source_version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_wallet_history_user", "wallet_history", ["user_id", "create_time_us", "entry_id"])


def downgrade() -> None:
    op.drop_table("wallet_history")
    op.drop_table("wallet_transfers")
    op.drop_table("wallet_address_counters")
    op.drop_table("wallet_wallets")
