"""Custody tables: wallets, movements and their decisions, the signature log, approval uses.

Revision ID: custody_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "custody_0001"
down_revision = None
branch_labels = ("custody",)
depends_on = None

# NUMERIC(78,0) holds 2^256 - 1; SQLite's NUMERIC affinity would turn large integers into floats.
Amount = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "custody_wallets",
        sa.Column("wallet_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("chain_family", sa.SmallInteger, nullable=False),
        sa.Column("chains", sa.String(1100), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False, unique=True),
        sa.Column("backend", sa.SmallInteger, nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("backend_reference", sa.String(256), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("xpub", sa.String(112), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False),
        sa.Column("disable_reason", sa.String(500), nullable=False),
        sa.Column("disabled_by", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_custody_wallets_address", "custody_wallets", ["address"])
    op.create_table(
        "custody_movements",
        sa.Column("movement_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("source_wallet_id", sa.String(36), nullable=False),
        sa.Column("destination_wallet_id", sa.String(36), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("plan_id", sa.String(36), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=True),
        sa.Column("outcome_message", sa.String(500), nullable=False),
        sa.Column("approval_expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_custody_movements_created", "custody_movements", ["create_time_us", "movement_id"])
    op.create_table(
        "custody_movement_decisions",
        sa.Column("movement_id", sa.String(36), primary_key=True),
        sa.Column("approver_id", sa.String(128), primary_key=True),
        sa.Column("decision", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.String(500), nullable=False),
        sa.Column("decide_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "custody_signature_records",
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("request_time_us", sa.BigInteger, nullable=False),
        sa.Column("caller", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("wallet_id", sa.String(36), nullable=False),
        sa.Column("wallet_kind", sa.SmallInteger, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("derivation_path", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("signing_hash", sa.String(66), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("approval_id", sa.String(36), nullable=False),
        sa.Column("purpose", sa.SmallInteger, nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("movement_id", sa.String(36), nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("refusal_reason", sa.SmallInteger, nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
    )
    op.create_index(
        "ix_custody_signature_records_time", "custody_signature_records", ["request_time_us", "record_id"]
    )
    op.create_table(
        "custody_approval_uses",
        sa.Column("approval_id", sa.String(36), primary_key=True),
        sa.Column("claims_sha256", sa.String(64), nullable=False),
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("first_record_id", sa.String(36), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "custody_hot_wallet_policies",
        sa.Column("policy_id", sa.String(36), primary_key=True),
        sa.Column("asset", sa.String(49), nullable=False, unique=True),
        sa.Column("hot_wallet_id", sa.String(36), nullable=False),
        sa.Column("cold_wallet_id", sa.String(36), nullable=False),
        sa.Column("floor", Amount, nullable=False),
        sa.Column("target", Amount, nullable=False),
        sa.Column("ceiling", Amount, nullable=False),
        sa.Column("auto_sweep", sa.Boolean, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("update_user_id", sa.String(128), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "custody_rebalance_plans",
        sa.Column("plan_id", sa.String(36), primary_key=True),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("asset", sa.String(49), nullable=False),
        sa.Column("hot_balance", Amount, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("amount", Amount, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("movement_id", sa.String(36), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("decide_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_custody_rebalance_plans_policy", "custody_rebalance_plans", ["policy_id", "state"])


def downgrade() -> None:
    op.drop_table("custody_rebalance_plans")
    op.drop_table("custody_hot_wallet_policies")
    op.drop_table("custody_approval_uses")
    op.drop_table("custody_signature_records")
    op.drop_table("custody_movement_decisions")
    op.drop_table("custody_movements")
    op.drop_table("custody_wallets")
