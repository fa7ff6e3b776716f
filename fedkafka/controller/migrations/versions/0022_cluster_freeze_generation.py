"""cluster freeze generation: each freeze of a cluster's commits by a coordination move counts one more, so that the
move's switch tells the freeze its own thread set from one cleared and set again since (by its run resumed on another
controller, still `running`); docs/DESIGN.md §10.1. 0 for every cluster at the upgrade.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('freeze_generation', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('freeze_generation')
