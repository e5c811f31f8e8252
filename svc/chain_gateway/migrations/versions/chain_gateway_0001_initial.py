"""Chain gateway tables: nonce manager, broadcast transactions, watched addresses, follower.

Revision ID: chain_gateway_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "chain_gateway_0001"
down_revision = None
branch_labels = ("chain_gateway",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
AutoIncrementId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cg_senders",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("next_nonce", sa.BigInteger, nullable=False),
        sa.Column("sync_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cg_reservations",
        sa.Column("reservation_id", sa.String(36), primary_key=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("transaction", sa.JSON, nullable=False),
        sa.Column("replaces_tx_hash", sa.String(66), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("end_time_us", sa.BigInteger, nullable=True),
        sa.Column("end_reason", sa.String(500), nullable=False),
    )
    op.create_index("ix_cg_reservations_sender", "cg_reservations", ["chain", "address", "nonce"])
    op.create_index("ix_cg_reservations_expiry", "cg_reservations", ["state", "expire_time_us"])
    op.create_table(
        "cg_transactions",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("tx_hash", sa.String(66), primary_key=True),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("value", Amount, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("gas_limit", sa.BigInteger, nullable=False),
        sa.Column("gas_price", Amount, nullable=True),
        sa.Column("max_fee_per_gas", Amount, nullable=True),
        sa.Column("max_priority_fee_per_gas", Amount, nullable=True),
        sa.Column("intent", sa.JSON, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("confirmations", sa.Integer, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("gas_used", sa.BigInteger, nullable=False),
        sa.Column("effective_gas_price", Amount, nullable=True),
        sa.Column("replaces_tx_hash", sa.String(66), nullable=False),
        sa.Column("replaced_by_tx_hash", sa.String(66), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("failure_message", sa.String(500), nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("reservation_id", sa.String(36), nullable=False),
        sa.Column("broadcast_time_us", sa.BigInteger, nullable=False),
        sa.Column("last_broadcast_time_us", sa.BigInteger, nullable=False),
        sa.Column("block_time_us", sa.BigInteger, nullable=True),
        sa.Column("final_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_cg_transactions_sender", "cg_transactions", ["chain", "from_address", "nonce"])
    op.create_index("ix_cg_transactions_status", "cg_transactions", ["chain", "status"])
    op.create_index("ix_cg_transactions_time", "cg_transactions", ["chain", "broadcast_time_us"])
    op.create_table(
        "cg_watched_addresses",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("start_block", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cg_blocks",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("hash", sa.String(66), primary_key=True),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("parent_hash", sa.String(66), nullable=False),
        sa.Column("block_time_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("transfer_count", sa.Integer, nullable=False),
        sa.Column("process_time_us", sa.BigInteger, nullable=False),
        sa.Column("orphan_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_cg_blocks_number", "cg_blocks", ["chain", "number"])
    op.create_table(
        "cg_transfers",
        sa.Column("id", AutoIncrementId, primary_key=True, autoincrement=True),
        sa.Column("transfer_id", sa.String(140), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("block_time_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("token_contract", sa.String(42), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("seen_time_us", sa.BigInteger, nullable=False),
        sa.Column("confirm_time_us", sa.BigInteger, nullable=True),
        sa.Column("reorg_time_us", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("transfer_id", "block_hash", name="uq_cg_transfers_inclusion"),
    )
    op.create_index("ix_cg_transfers_status", "cg_transfers", ["chain", "status", "block_number"])
    op.create_index("ix_cg_transfers_block", "cg_transfers", ["chain", "block_hash"])
    op.create_table(
        "cg_followers",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("last_block_number", sa.BigInteger, nullable=False),
        sa.Column("last_block_hash", sa.String(66), nullable=False),
        sa.Column("reorg_count", sa.BigInteger, nullable=False),
        sa.Column("last_reorg_depth", sa.Integer, nullable=False),
        sa.Column("last_reorg_time_us", sa.BigInteger, nullable=True),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "cg_followers",
        "cg_transfers",
        "cg_blocks",
        "cg_watched_addresses",
        "cg_transactions",
        "cg_reservations",
        "cg_senders",
    ):
        op.drop_table(table)
