"""pending deletion topic ids: the Kafka topic id a pending deletion deletes by (never by name), and each row's own
random id; a row of an older revision gets a random id and learns its topic id at its next attempt
(docs/DESIGN.md §5.8, "A stale deletion deletes nothing created since")

Revision ID: 0016
Revises: 0015
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pending_deletions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kafka_topic_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('record_id', sa.String(length=32), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT cluster, physical_topic FROM pending_deletions")).all()
    for cluster, physical_topic in rows:
        conn.execute(sa.text("UPDATE pending_deletions SET record_id = :record_id "
                             "WHERE cluster = :cluster AND physical_topic = :physical_topic"),
                     {"record_id": uuid.uuid4().hex, "cluster": cluster, "physical_topic": physical_topic})
    with op.batch_alter_table('pending_deletions', schema=None) as batch_op:
        batch_op.alter_column('record_id', existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_deletions', schema=None) as batch_op:
        batch_op.drop_column('record_id')
        batch_op.drop_column('kafka_topic_id')
