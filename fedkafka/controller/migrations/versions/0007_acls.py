"""ACLs on logical resources

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('acls',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=24), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('pattern_type', sa.String(length=16), nullable=False),
    sa.Column('principal', sa.String(length=256), nullable=False),
    sa.Column('host', sa.String(length=256), nullable=False),
    sa.Column('operation', sa.String(length=24), nullable=False),
    sa.Column('permission', sa.String(length=8), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('resource_type', 'name', 'pattern_type', 'principal', 'host', 'operation', 'permission')
    )


def downgrade() -> None:
    op.drop_table('acls')
