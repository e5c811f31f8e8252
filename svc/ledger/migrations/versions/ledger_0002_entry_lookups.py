"""Entry lookups of ListJournalEntries and GetJournalEntry: chain transaction hash and reference indexes.

Adds ledger_entries.tx_hash (the lower-case hash of the entry's chain transfer, backfilled from
chain_transfer) and indexes on the columns entries are looked up by. On PostgreSQL the indexes
are partial (only rows where the column is set), so the posting path pays nothing for the many
entries without a correlation id, hold or correction reference.

Revision ID: ledger_0002
Revises: ledger_0001
"""

import sqlalchemy as sa
from alembic import op
from finmesh.ledger.v1 import ledger_resources_pb2 as resources

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None

LOOKUP_COLUMNS = ("correlation_id", "pending_entry_id", "corrects_entry_id", "tx_hash")


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("tx_hash", sa.String(66), nullable=False, server_default=""))
    entries = sa.table(
        "ledger_entries",
        sa.column("sequence", sa.BigInteger),
        sa.column("chain_transfer", sa.LargeBinary),
        sa.column("tx_hash", sa.String),
    )
    bind = op.get_bind()
    with_transfer = sa.select(entries.c.sequence, entries.c.chain_transfer).where(
        sa.func.length(entries.c.chain_transfer) > 0
    )
    for row in bind.execute(with_transfer).all():
        tx_hash = resources.ChainTransferRef.FromString(row.chain_transfer).tx_hash.lower()
        bind.execute(sa.update(entries).where(entries.c.sequence == row.sequence).values(tx_hash=tx_hash))
    for column in LOOKUP_COLUMNS:
        op.create_index(
            f"ix_ledger_entries_{column}",
            "ledger_entries",
            [column],
            postgresql_where=sa.text(f"{column} <> ''"),
        )


def downgrade() -> None:
    for column in LOOKUP_COLUMNS:
        op.drop_index(f"ix_ledger_entries_{column}", "ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("tx_hash")
