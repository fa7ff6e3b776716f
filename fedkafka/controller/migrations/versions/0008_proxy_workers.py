"""proxy workers: one row per worker of a proxy run with --workers N, each with its own lease, fence and ack
(docs/DESIGN.md §4.10)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('worker_of', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.drop_column('worker_of')
        batch_op.drop_column('worker')
