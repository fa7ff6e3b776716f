"""move planned target end and held_for: the log end of a move's target read when the move was planned (a freeze
that finds it grew holds the move), and why a held move is held (the sweeper reads an unread target again);
docs/DESIGN.md §3.3, "Lost commits"

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('planned_target_end', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('held_for', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_column('held_for')
        batch_op.drop_column('planned_target_end')
