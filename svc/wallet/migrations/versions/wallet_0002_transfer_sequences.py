"""Ledger sequences of internal transfers and their reversals, so balances read after a transfer
reflect it (the account service's read-your-writes bound).

Revision ID: wallet_0002
Revises: wallet_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "wallet_0002"
down_revision = "wallet_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "wallet_transfers", sa.Column("ledger_sequence", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column(
        "wallet_transfers", sa.Column("reversal_sequence", sa.BigInteger, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("wallet_transfers", "reversal_sequence")
    op.drop_column("wallet_transfers", "ledger_sequence")
