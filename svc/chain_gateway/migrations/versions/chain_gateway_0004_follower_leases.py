"""Follower leases: replicas sharing the database follow a chain one at a time, the holder of the
chain's lease; each block records the holder that applied it.

Revision ID: chain_gateway_0004
Revises: chain_gateway_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "chain_gateway_0004"
down_revision = "chain_gateway_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cg_follower_leases",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("acquire_time_us", sa.BigInteger, nullable=False),
        sa.Column("renew_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("cg_blocks") as table:
        table.add_column(sa.Column("processor", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("cg_blocks") as table:
        table.drop_column("processor")
    op.drop_table("cg_follower_leases")
