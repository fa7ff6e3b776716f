"""unclean moves (failover): the logical gap a move leaves before its new segment; coordination moves: commits
frozen on a cluster

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gap', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('commits_frozen', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('commits_frozen')
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_column('gap')
