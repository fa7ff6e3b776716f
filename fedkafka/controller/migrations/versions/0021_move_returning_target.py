"""move returning target: whether a move's target physical partition was claimed for its logical partition before
the move's plan (a move back onto its chain, whose plan, freeze and seal take the target's settled end), decided once
when the move is planned; docs/DESIGN.md §6.3, "A move back onto its chain". NULL (planned before this revision):
taken as returning, the reading that never starts a segment at a trailing high watermark.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('returning_target', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_column('returning_target')
