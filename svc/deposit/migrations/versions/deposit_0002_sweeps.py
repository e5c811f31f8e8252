"""Deposit sweeps: the chain's native asset on each sweep (its fees and top-ups are in it), and the
transactions of sweep items, stored when built and, signed, before they are broadcast.

Revision ID: deposit_0002
Revises: deposit_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "deposit_0002"
down_revision = "deposit_0001"
branch_labels = None
depends_on = None

Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("deposit_sweeps") as table:
        table.add_column(sa.Column("native_asset", sa.String(49), nullable=False, server_default=""))
    op.create_index("ix_deposit_sweeps_asset_state", "deposit_sweeps", ["chain", "asset", "state"])
    op.create_index("ix_deposit_sweeps_state", "deposit_sweeps", ["state"])
    op.create_table(
        "deposit_sweep_transactions",
        sa.Column("sweep_id", sa.String(36), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("purpose", sa.SmallInteger, primary_key=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("unsigned", sa.LargeBinary, nullable=False),
        sa.Column("approval", sa.LargeBinary, nullable=False),
        sa.Column("reservation_id", sa.String(36), nullable=False),
        sa.Column("value", Amount, nullable=False),
        sa.Column("signed_transaction", sa.Text, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("network_fee", Amount, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_deposit_sweep_transactions_tx", "deposit_sweep_transactions", ["chain", "tx_hash"])


def downgrade() -> None:
    op.drop_index("ix_deposit_sweep_transactions_tx", table_name="deposit_sweep_transactions")
    op.drop_table("deposit_sweep_transactions")
    op.drop_index("ix_deposit_sweeps_state", table_name="deposit_sweeps")
    op.drop_index("ix_deposit_sweeps_asset_state", table_name="deposit_sweeps")
    with op.batch_alter_table("deposit_sweeps") as table:
        table.drop_column("native_asset")
