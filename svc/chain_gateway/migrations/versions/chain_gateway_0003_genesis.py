"""Followers: the genesis hash of the chain followed, so that a chain that was reset (a
development chain restarted empty) is recognised instead of being taken for a deep reorganisation.

Revision ID: chain_gateway_0003
Revises: chain_gateway_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "chain_gateway_0003"
down_revision = "chain_gateway_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cg_followers") as table:
        table.add_column(sa.Column("genesis_hash", sa.String(66), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("cg_followers") as table:
        table.drop_column("genesis_hash")
