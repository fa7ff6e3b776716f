"""move target end: the log end of a move's target physical partition, read before the freeze commits, which the
seal checks against Kafka's (docs/DESIGN.md §3.3, "Lost commits")

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_end', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_column('target_end')
