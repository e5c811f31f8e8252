"""Deposit tables: deposit addresses (from the wallet service), deposits, per-asset settings, sweeps.

Revision ID: deposit_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "deposit_0001"
down_revision = None
branch_labels = ("deposit",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deposit_addresses",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("wallet_id", sa.String(36), nullable=False),
        sa.Column("derivation_path", sa.String(64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deposit_deposits",
        sa.Column("deposit_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("wallet_id", sa.String(36), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("block_time_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("token_contract", sa.String(42), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("included", sa.Boolean, nullable=False),
        sa.Column("chain_confirmed", sa.Boolean, nullable=False),
        sa.Column("required_confirmations", sa.Integer, nullable=False),
        sa.Column("minimum_amount", Amount, nullable=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("ledger_account_id", sa.String(36), nullable=False),
        sa.Column("pending_entry_id", sa.String(120), nullable=False),
        sa.Column("credit_entry_id", sa.String(120), nullable=False),
        sa.Column("reversal_entry_id", sa.String(128), nullable=False),
        sa.Column("sweep_id", sa.String(36), nullable=False),
        sa.Column("reorg_count", sa.Integer, nullable=False),
        sa.Column("freeze_id", sa.String(36), nullable=False),
        sa.Column("freeze_entry_id", sa.String(128), nullable=False),
        sa.Column("freeze_time_us", sa.BigInteger, nullable=True),
        sa.Column("fork_block_number", sa.BigInteger, nullable=False),
        sa.Column("frozen_amount", Amount, nullable=False),
        sa.Column("resolution", sa.SmallInteger, nullable=False),
        sa.Column("resolved_by", sa.String(128), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("resolve_note", sa.String(1000), nullable=False),
        sa.Column("resolve_time_us", sa.BigInteger, nullable=True),
        sa.Column("seen_time_us", sa.BigInteger, nullable=False),
        sa.Column("credit_time_us", sa.BigInteger, nullable=True),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_deposit_deposits_user_seen", "deposit_deposits", ["user_id", "seen_time_us"])
    op.create_index("ix_deposit_deposits_seen", "deposit_deposits", ["seen_time_us"])
    op.create_index("ix_deposit_deposits_tx", "deposit_deposits", ["chain", "tx_hash"])
    op.create_index("ix_deposit_deposits_state", "deposit_deposits", ["state"])
    op.create_table(
        "deposit_configs",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(16), primary_key=True),
        sa.Column("minimum_amount", Amount, nullable=False),
        sa.Column("confirmation_depth", sa.Integer, nullable=False),
        sa.Column("sweep_threshold", Amount, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_user_id", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deposit_sweeps",
        sa.Column("sweep_id", sa.String(36), primary_key=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("destination_wallet_id", sa.String(36), nullable=False),
        sa.Column("destination_address", sa.String(42), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("trigger", sa.SmallInteger, nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("total_amount", Amount, nullable=False),
        sa.Column("total_gas_top_up", Amount, nullable=False),
        sa.Column("total_network_fee", Amount, nullable=False),
        sa.Column("ledger_entry_ids", sa.Text, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("complete_time_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_deposit_sweeps_create", "deposit_sweeps", ["create_time_us"])
    op.create_table(
        "deposit_sweep_items",
        sa.Column("sweep_id", sa.String(36), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("derivation_path", sa.String(64), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("gas_top_up_tx_hash", sa.String(66), nullable=False),
        sa.Column("gas_top_up", Amount, nullable=False),
        sa.Column("sweep_tx_hash", sa.String(66), nullable=False),
        sa.Column("network_fee", Amount, nullable=False),
        sa.Column("message", sa.String(500), nullable=False),
    )
