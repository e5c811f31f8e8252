"""KYC: sanctions list versions imported, activated and discarded through the contract; the
entries of every version; at most one ACTIVE version per source, kept by the database.

Revision ID: kyc_0002
Revises: kyc_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "kyc_0002"
down_revision = "kyc_0001"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state = 2")


def upgrade() -> None:
    with op.batch_alter_table("kyc_sanctions_versions") as table:
        table.add_column(sa.Column("published_date", sa.String(10), nullable=False, server_default=""))
        table.add_column(sa.Column("activated_by", sa.String(128), nullable=False, server_default=""))
        table.add_column(sa.Column("previous_version_id", sa.String(36), nullable=False, server_default=""))
        table.add_column(sa.Column("discarded_by", sa.String(128), nullable=False, server_default=""))
        table.add_column(sa.Column("discard_note", sa.String(2000), nullable=False, server_default=""))
        table.add_column(sa.Column("discard_time_us", sa.BigInteger, nullable=True))
    # Versions recorded from the list file before this revision were activated on import.
    op.execute(
        "UPDATE kyc_sanctions_versions SET activated_by = imported_by WHERE activate_time_us IS NOT NULL"
    )
    op.create_index(
        "ux_kyc_sanctions_versions_active",
        "kyc_sanctions_versions",
        ["source"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index(
        "ix_kyc_sanctions_versions_time", "kyc_sanctions_versions", ["import_time_us", "version_id"]
    )
    op.create_table(
        "kyc_sanctions_entries",
        sa.Column("version_id", sa.String(36), primary_key=True),
        sa.Column("entry_id", sa.String(128), primary_key=True),
        sa.Column("entry", sa.JSON, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kyc_sanctions_entries")
    op.drop_index("ix_kyc_sanctions_versions_time", "kyc_sanctions_versions")
    op.drop_index("ux_kyc_sanctions_versions_active", "kyc_sanctions_versions")
    with op.batch_alter_table("kyc_sanctions_versions") as table:
        table.drop_column("discard_time_us")
        table.drop_column("discard_note")
        table.drop_column("discarded_by")
        table.drop_column("previous_version_id")
        table.drop_column("activated_by")
        table.drop_column("published_date")
