"""model registry: blobs, versions, active versions

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from core.db import Blob, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "model_blob_chunks",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("model_blobs.sha256", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", Blob, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("blob_sha256", sa.String(64), sa.ForeignKey("model_blobs.sha256"), nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("dataset_sha256", sa.String(64)),
        sa.Column("test_accuracy", sa.Float),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("confusion_matrix", sa.JSON, nullable=False),
        sa.Column("curves", sa.JSON, nullable=False),
        sa.Column("train_seconds", sa.Float),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
    )
    op.create_table(
        "active_models",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("activated_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("active_models")
    op.drop_table("model_versions")
    op.drop_table("model_blob_chunks")
    op.drop_table("model_blobs")
