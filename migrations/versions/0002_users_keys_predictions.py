"""users, API keys, predictions and their images

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from core.db import Blob, Timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_used_at", Timestamp),
        sa.Column("revoked_at", Timestamp),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("n_images", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp),
        sa.Column("finished_at", Timestamp),
        sa.Column("queue_ms", sa.Float),
        sa.Column("compute_ms", sa.Float),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_predictions_idempotency"),
    )
    op.create_index("ix_predictions_user_created", "predictions", ["user_id", "created_at"])
    op.create_index("ix_predictions_status_created", "predictions", ["status", "created_at"])
    op.create_table(
        "prediction_images",
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("preprocessed_png", Blob, nullable=False),
        sa.Column("digit", sa.Integer),
        sa.Column("confidence", sa.Float),
        sa.Column("probabilities", sa.JSON),
        sa.Column("feedback_label", sa.Integer),
        sa.Column("feedback_at", Timestamp),
    )


def downgrade() -> None:
    op.drop_table("prediction_images")
    op.drop_table("predictions")
    op.drop_table("api_keys")
    op.drop_table("users")
