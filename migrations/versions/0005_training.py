"""continuous improvement: the review state of users' corrections, training jobs on the queue, a gated
retrain's decision and a search's generations with the version they registered

Revision ID: 0005
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from core.db import Timestamp

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_images") as batch:
        batch.add_column(sa.Column("review_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.Integer, nullable=True))
        batch.add_column(sa.Column("reviewed_at", Timestamp, nullable=True))
        batch.create_foreign_key("fk_prediction_images_reviewed_by", "users", ["reviewed_by"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_prediction_images_review_state", ["review_state"])
    # corrections made before reviews existed wait for one
    op.execute("UPDATE prediction_images SET review_state = 'pending' WHERE feedback_label IS NOT NULL")
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("gate", sa.JSON, nullable=True))
        batch.add_column(sa.Column("search", sa.JSON, nullable=True))
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
    )
    op.create_index("ix_training_jobs_created", "training_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_created", table_name="training_jobs")
    op.drop_table("training_jobs")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("search")
        batch.drop_column("gate")
    with op.batch_alter_table("prediction_images") as batch:
        batch.drop_index("ix_prediction_images_review_state")
        batch.drop_constraint("fk_prediction_images_reviewed_by", type_="foreignkey")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("review_state")
