"""scanned ends: the last high watermark a scan read of each physical partition, kept for the next controller's
failover seal (docs/DESIGN.md §9.1)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('physical_partitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scanned_end', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('scanned_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('physical_partitions', schema=None) as batch_op:
        batch_op.drop_column('scanned_at')
        batch_op.drop_column('scanned_end')
