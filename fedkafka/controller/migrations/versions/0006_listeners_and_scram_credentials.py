"""proxy listeners and SCRAM credentials

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scram_credentials',
    sa.Column('user', sa.String(length=256), nullable=False),
    sa.Column('mechanism', sa.String(length=16), nullable=False),
    sa.Column('salt', sa.String(length=128), nullable=False),
    sa.Column('iterations', sa.Integer(), nullable=False),
    sa.Column('stored_key', sa.String(length=128), nullable=False),
    sa.Column('server_key', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('user', 'mechanism')
    )
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('listeners_json', sa.Text(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.drop_column('listeners_json')
    op.drop_table('scram_credentials')
