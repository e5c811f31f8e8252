"""Custody: the network fee a movement's transaction paid, in the chain's native asset.

Revision ID: custody_0003
Revises: custody_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "custody_0003"
down_revision = "custody_0002"
branch_labels = None
depends_on = None

Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("custody_movements") as table:
        table.add_column(sa.Column("network_fee_asset", sa.String(49), nullable=False, server_default=""))
        table.add_column(sa.Column("network_fee", Amount, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("custody_movements") as table:
        table.drop_column("network_fee")
        table.drop_column("network_fee_asset")
