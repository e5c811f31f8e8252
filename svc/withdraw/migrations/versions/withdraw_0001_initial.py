"""Withdraw tables: withdrawals, their transactions, approvers' decisions, history, the whitelist
and the per-user lock rows.

Revision ID: withdraw_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "withdraw_0001"
down_revision = None
branch_labels = ("withdraw",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "withdraw_withdrawals",
        sa.Column("withdrawal_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("fee", Amount, nullable=False),
        sa.Column("destination", sa.String(42), nullable=False),
        sa.Column("address_id", sa.String(36), nullable=False),
        sa.Column("destination_label", sa.String(64), nullable=False),
        sa.Column("note", sa.String(140), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("outcome_message", sa.String(200), nullable=False),
        sa.Column("risk_decision", sa.SmallInteger, nullable=False),
        sa.Column("risk_reasons", sa.String(4000), nullable=False),
        sa.Column("risk_time_us", sa.BigInteger, nullable=True),
        sa.Column("auto_approved", sa.Boolean, nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False),
        sa.Column("user_ledger_account_id", sa.String(36), nullable=False),
        sa.Column("hold_entry_id", sa.String(128), nullable=False),
        sa.Column("hold", sa.SmallInteger, nullable=False),
        sa.Column("source_wallet_id", sa.String(36), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("confirmations", sa.Integer, nullable=False),
        sa.Column("required_confirmations", sa.Integer, nullable=False),
        sa.Column("network_fee_asset", sa.String(49), nullable=False),
        sa.Column("network_fee", Amount, nullable=False),
        sa.Column("replacements", sa.Integer, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("approve_time_us", sa.BigInteger, nullable=True),
        sa.Column("broadcast_time_us", sa.BigInteger, nullable=True),
        sa.Column("complete_time_us", sa.BigInteger, nullable=True),
        sa.Column("approval_expire_time_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "request_id", name="uq_withdraw_withdrawals_request"),
    )
    op.create_index(
        "ix_withdraw_withdrawals_user_time", "withdraw_withdrawals", ["user_id", "create_time_us"]
    )
    op.create_index("ix_withdraw_withdrawals_state", "withdraw_withdrawals", ["state", "update_time_us"])
    op.create_table(
        "withdraw_transactions",
        sa.Column("withdrawal_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("unsigned", sa.LargeBinary, nullable=False),
        sa.Column("approval", sa.LargeBinary, nullable=False),
        sa.Column("signed_transaction", sa.String(262146), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("fee_per_gas", Amount, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("broadcast_time_us", sa.BigInteger, nullable=True),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_withdraw_transactions_hash", "withdraw_transactions", ["tx_hash"])
    op.create_table(
        "withdraw_decisions",
        sa.Column("withdrawal_id", sa.String(36), primary_key=True),
        sa.Column("approver_id", sa.String(64), primary_key=True),
        sa.Column("decision", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.String(500), nullable=False),
        sa.Column("decide_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "withdraw_history",
        sa.Column("withdrawal_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("from_state", sa.SmallInteger, nullable=False),
        sa.Column("to_state", sa.SmallInteger, nullable=False),
        sa.Column("actor_type", sa.SmallInteger, nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("transition_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "withdraw_addresses",
        sa.Column("address_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("usable_time_us", sa.BigInteger, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("remove_time_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_withdraw_addresses_user", "withdraw_addresses", ["user_id", "create_time_us"])
    op.create_table(
        "withdraw_users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "withdraw_users",
        "withdraw_addresses",
        "withdraw_history",
        "withdraw_decisions",
        "withdraw_transactions",
        "withdraw_withdrawals",
    ):
        op.drop_table(table)
