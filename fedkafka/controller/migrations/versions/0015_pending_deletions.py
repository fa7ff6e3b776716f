"""pending deletions: the physical topics of a deleted logical topic that their clusters have not yet confirmed gone;
a topic of that name is not created again until they are (docs/DESIGN.md §4.5)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_deletions',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('physical_topic', sa.String(length=249), nullable=False),
    sa.Column('topic', sa.String(length=249), nullable=False),
    sa.Column('deleted_at', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=1024), nullable=True),
    sa.PrimaryKeyConstraint('cluster', 'physical_topic')
    )
    with op.batch_alter_table('pending_deletions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_deletions_topic'), ['topic'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_deletions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_deletions_topic'))
    op.drop_table('pending_deletions')
