"""segment moves and workflow run records

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('moves',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('workflow_id', sa.Integer(), nullable=True),
    sa.Column('topic', sa.String(length=249), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('from_cluster', sa.String(length=64), nullable=False),
    sa.Column('to_cluster', sa.String(length=64), nullable=False),
    sa.Column('to_topic', sa.String(length=249), nullable=False),
    sa.Column('to_partition', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('frozen_version', sa.BigInteger(), nullable=True),
    sa.Column('seal', sa.BigInteger(), nullable=True),
    sa.Column('phys_start', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_moves_workflow_id'), ['workflow_id'], unique=False)
    with op.batch_alter_table('workflows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('record_json', sa.Text(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('updated_at', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('workflows', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('record_json')
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_moves_workflow_id'))
    op.drop_table('moves')
