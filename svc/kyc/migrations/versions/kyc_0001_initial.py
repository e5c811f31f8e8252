"""KYC tables: profiles, submissions and documents, screenings, sanctions list versions and AML
risk assessments.

Revision ID: kyc_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "kyc_0001"
down_revision = None
branch_labels = ("kyc",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kyc_documents",
        sa.Column("document_id", sa.String(36), primary_key=True),
        sa.Column("submission_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("side", sa.SmallInteger, nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("issuing_country", sa.String(2), nullable=False),
        sa.Column("expiry_date", sa.String(10), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("rejection_reason", sa.SmallInteger, nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("upload_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_kyc_documents_submission_id", "kyc_documents", ["submission_id"])
    op.create_table(
        "kyc_profiles",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("level_grant_time_us", sa.BigInteger, nullable=True),
        sa.Column("sanctions_status", sa.SmallInteger, nullable=False),
        sa.Column("sanctions_screening_id", sa.String(36), nullable=False),
        sa.Column("risk_assessment_id", sa.String(36), nullable=False),
        sa.Column("country_of_residence", sa.String(2), nullable=False),
        sa.Column("politically_exposed", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "kyc_risk_assessments",
        sa.Column("assessment_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("rating", sa.SmallInteger, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("factors", sa.JSON, nullable=False),
        sa.Column("method", sa.SmallInteger, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("assess_time_us", sa.BigInteger, nullable=False),
        sa.Column("next_review_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "kyc_sanctions_versions",
        sa.Column("version_id", sa.String(36), primary_key=True),
        sa.Column("source", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("entry_count", sa.Integer, nullable=False),
        sa.Column("address_count", sa.Integer, nullable=False),
        sa.Column("added_count", sa.Integer, nullable=False),
        sa.Column("removed_count", sa.Integer, nullable=False),
        sa.Column("entry_ids", sa.JSON, nullable=False),
        sa.Column("imported_by", sa.String(128), nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("import_time_us", sa.BigInteger, nullable=False),
        sa.Column("activate_time_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "kyc_screenings",
        sa.Column("screening_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("sealed_name", sa.LargeBinary, nullable=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("context", sa.SmallInteger, nullable=False),
        sa.Column("reference_id", sa.String(128), nullable=False),
        sa.Column("decision", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("matches", sa.JSON, nullable=False),
        sa.Column("threshold", sa.String(8), nullable=False),
        sa.Column("version_ids", sa.JSON, nullable=False),
        sa.Column("proposed_resolution", sa.SmallInteger, nullable=False),
        sa.Column("proposed_by", sa.String(128), nullable=False),
        sa.Column("proposal_note", sa.String(4000), nullable=False),
        sa.Column("checker_id", sa.String(128), nullable=False),
        sa.Column("check_verdict", sa.SmallInteger, nullable=False),
        sa.Column("check_note", sa.String(4000), nullable=False),
        sa.Column("check_time_us", sa.BigInteger, nullable=True),
        sa.Column("screen_time_us", sa.BigInteger, nullable=False),
        sa.Column("resolve_time_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "kyc_submissions",
        sa.Column("submission_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("open_user_id", sa.String(64), nullable=True, unique=True),
        sa.Column("target_level", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("personal_data", sa.LargeBinary, nullable=False),
        sa.Column("reviewer_id", sa.String(128), nullable=False),
        sa.Column("review_decision", sa.SmallInteger, nullable=False),
        sa.Column("approved_level", sa.SmallInteger, nullable=False),
        sa.Column("review_reasons", sa.JSON, nullable=False),
        sa.Column("message_to_user", sa.String(2000), nullable=False),
        sa.Column("internal_note", sa.String(4000), nullable=False),
        sa.Column("review_time_us", sa.BigInteger, nullable=True),
        sa.Column("checker_id", sa.String(128), nullable=False),
        sa.Column("check_verdict", sa.SmallInteger, nullable=False),
        sa.Column("check_note", sa.String(4000), nullable=False),
        sa.Column("check_time_us", sa.BigInteger, nullable=True),
        sa.Column("resubmissions", sa.Integer, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("submit_time_us", sa.BigInteger, nullable=True),
        sa.Column("decide_time_us", sa.BigInteger, nullable=True),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_kyc_submissions_user_id", "kyc_submissions", ["user_id"])
    op.create_index("ix_kyc_screenings_user", "kyc_screenings", ["user_id", "state"])
    op.create_index("ix_kyc_screenings_time", "kyc_screenings", ["screen_time_us", "screening_id"])
    op.create_index("ix_kyc_screenings_reference", "kyc_screenings", ["reference_id"])
    op.create_index("ix_kyc_submissions_queue", "kyc_submissions", ["state", "create_time_us"])
    op.create_index("ix_kyc_risk_assessments_user", "kyc_risk_assessments", ["user_id", "assess_time_us"])


def downgrade() -> None:
    op.drop_table("kyc_submissions")
    op.drop_table("kyc_screenings")
    op.drop_table("kyc_sanctions_versions")
    op.drop_table("kyc_risk_assessments")
    op.drop_table("kyc_profiles")
    op.drop_table("kyc_documents")
