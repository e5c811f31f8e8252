"""Auth tables: credentials, lockout counters, login attempts, sessions and refresh tokens,
sealed responses kept for retries, signing keys, TOTP and recovery codes, login challenges,
step-up tokens, API keys and role assignments.

Revision ID: auth_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0001"
down_revision = None
branch_labels = ("auth",)
depends_on = None
TABLES = (
    "auth_totp",
    "auth_step_ups",
    "auth_signing_keys",
    "auth_sessions",
    "auth_role_assignments",
    "auth_replays",
    "auth_refresh_tokens",
    "auth_recovery_codes",
    "auth_login_attempts",
    "auth_credentials",
    "auth_counters",
    "auth_challenges",
    "auth_api_keys",
)


def upgrade() -> None:
    op.create_table(
        "auth_api_keys",
        sa.Column("api_key_id", sa.String(27), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("allowed_ip_ranges", sa.Text, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
        sa.Column("secret_fingerprint", sa.String(16), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("last_used_time_us", sa.BigInteger, nullable=True),
        sa.Column("last_used_ip", sa.String(45), nullable=False),
        sa.Column("revoke_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_challenges",
        sa.Column("challenge_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("identifier_hash", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("device_name", sa.String(128), nullable=False),
        sa.Column("platform", sa.SmallInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
    )
    op.create_table(
        "auth_counters",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start_us", sa.BigInteger, nullable=False),
        sa.Column("locked_until_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "auth_credentials",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "auth_login_attempts",
        sa.Column("login_attempt_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("identifier_hash", sa.String(64), nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("new_device_or_ip", sa.Boolean, nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("attempt_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "auth_recovery_codes",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("used_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("issue_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("rotate_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_replays",
        sa.Column("method", sa.String(100), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("sealed_response", sa.LargeBinary, nullable=True),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "auth_role_assignments",
        sa.Column("role_assignment_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("role", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("justification", sa.String(2000), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("revoked_by", sa.String(64), nullable=False),
        sa.Column("decision_note", sa.String(2000), nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=True),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("decide_time_us", sa.BigInteger, nullable=True),
        sa.Column("revoke_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("session_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("device_name", sa.String(128), nullable=False),
        sa.Column("platform", sa.SmallInteger, nullable=False),
        sa.Column("login_ip", sa.String(45), nullable=False),
        sa.Column("last_ip", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=False),
        sa.Column("methods", sa.String(32), nullable=False),
        sa.Column("roles", sa.String(32), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("last_refresh_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("revoke_time_us", sa.BigInteger, nullable=True),
        sa.Column("revoke_reason", sa.SmallInteger, nullable=True),
    )
    op.create_table(
        "auth_signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("private_sealed", sa.LargeBinary, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("activate_time_us", sa.BigInteger, nullable=True),
        sa.Column("retire_time_us", sa.BigInteger, nullable=True),
        sa.Column("remove_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_step_ups",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("purpose", sa.SmallInteger, nullable=False),
        sa.Column("operation_digest", sa.String(64), nullable=False),
        sa.Column("factor", sa.SmallInteger, nullable=False),
        sa.Column("verify_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("redeem_request_id", sa.String(128), nullable=True),
    )
    op.create_table(
        "auth_totp",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("enrollment_id", sa.String(36), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("confirm_time_us", sa.BigInteger, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_auth_login_attempts_user", "auth_login_attempts", ["user_id", "attempt_time_us"])
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id", "state", "create_time_us"])
    op.create_index("ix_auth_refresh_tokens_session", "auth_refresh_tokens", ["session_id"])
    op.create_index("ix_auth_api_keys_user", "auth_api_keys", ["user_id", "create_time_us"])
    op.create_index("ix_auth_role_assignments_user", "auth_role_assignments", ["user_id", "state"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
