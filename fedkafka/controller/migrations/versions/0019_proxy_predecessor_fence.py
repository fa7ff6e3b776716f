"""proxy predecessor fence: when a member was taken over by a new process (another member secret) before its
previous process's fence had run out, that fence; a move counts the member as acked only once it and the grace
have passed (docs/DESIGN.md §4.9, F4). NULL: no takeover recorded (every row before this revision)

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('predecessor_fence_expires', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.drop_column('predecessor_fence_expires')
