"""proxy fence deadline: how long a proxy may produce without renewing (docs/DESIGN.md §4.9)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fence_expires', sa.Float(), nullable=False, server_default='0'))
    # a proxy registered before this revision was told it may produce until its lease ran out
    op.execute("UPDATE proxies SET fence_expires = lease_expires")


def downgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.drop_column('fence_expires')
