"""Notification tables: deliveries and their attempts, the in-app inbox, preferences, push
devices and templates.

Revision ID: notification_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "notification_0001"
down_revision = None
branch_labels = ("notification",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_attempts",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("attempt_number", sa.Integer, primary_key=True),
        sa.Column("start_time_us", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        sa.Column("permanent_failure", sa.Boolean, nullable=False),
        sa.Column("detail", sa.String(1000), nullable=False),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("notification_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("category", sa.SmallInteger, nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("variables", sa.LargeBinary, nullable=False),
        sa.Column("destination_override", sa.String(254), nullable=False),
        sa.Column("template_id", sa.String(36), nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("rendered_language", sa.String(35), nullable=False),
        sa.Column("masked_destination", sa.String(254), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("suppression_reason", sa.SmallInteger, nullable=False),
        sa.Column("source_event_id", sa.String(36), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(1000), nullable=False),
        sa.Column("next_attempt_time_us", sa.BigInteger, nullable=True),
        sa.Column("lease_until_us", sa.BigInteger, nullable=True),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("sent_time_us", sa.BigInteger, nullable=True),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notification_inbox",
        sa.Column("inbox_message_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False, unique=True),
        sa.Column("category", sa.SmallInteger, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.String(20000), nullable=False),
        sa.Column("action_link", sa.String(512), nullable=False),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("read_time_us", sa.BigInteger, nullable=True),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notification_push_devices",
        sa.Column("push_device_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("platform", sa.SmallInteger, nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("token", sa.LargeBinary, nullable=False),
        sa.Column("token_suffix", sa.String(8), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("device_name", sa.String(128), nullable=False),
        sa.Column("app_version", sa.String(32), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notification_templates",
        sa.Column("template_id", sa.String(36), primary_key=True),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("category", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.String(20000), nullable=False),
        sa.Column("html_body", sa.String(100000), nullable=False),
        sa.Column("action_link", sa.String(512), nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("published_by", sa.String(128), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("publish_time_us", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ix_notification_deliveries_due", "notification_deliveries", ["state", "next_attempt_time_us"]
    )
    op.create_index(
        "ix_notification_deliveries_user", "notification_deliveries", ["user_id", "create_time_us"]
    )
    op.create_index(
        "ix_notification_deliveries_time", "notification_deliveries", ["create_time_us", "delivery_id"]
    )
    op.create_index("ix_notification_inbox_user", "notification_inbox", ["user_id", "create_time_us"])
    op.create_index("ix_notification_push_devices_user", "notification_push_devices", ["user_id"])
    op.create_index(
        "ix_notification_templates_key",
        "notification_templates",
        ["event_key", "channel", "language", "state"],
    )


def downgrade() -> None:
    op.drop_table("notification_templates")
    op.drop_table("notification_push_devices")
    op.drop_table("notification_preferences")
    op.drop_table("notification_inbox")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_attempts")
