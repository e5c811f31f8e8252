"""Watched addresses: the range of earlier blocks still to rescan for an address added with a
start block below the follower's position.

Revision ID: chain_gateway_0002
Revises: chain_gateway_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "chain_gateway_0002"
down_revision = "chain_gateway_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cg_watched_addresses") as table:
        table.add_column(sa.Column("rescan_next", sa.BigInteger, nullable=True))
        table.add_column(sa.Column("rescan_end", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cg_watched_addresses") as table:
        table.drop_column("rescan_end")
        table.drop_column("rescan_next")
