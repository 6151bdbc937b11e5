"""which job carries a prediction and which worker runs it (the sweeper's view of batches and dead
workers); how cleanly each image's ink separated from its paper

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("job_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(128), nullable=True))
    with op.batch_alter_table("prediction_images") as batch:
        batch.add_column(sa.Column("quality", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_images") as batch:
        batch.drop_column("quality")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("worker")
        batch.drop_column("job_id")
