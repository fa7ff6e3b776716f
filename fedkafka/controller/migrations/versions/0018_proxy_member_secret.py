"""proxy member secret: the SHA-256 of the secret a member's latest registration was given, which its heartbeats
must present; NULL for a row registered before (accepted without a secret until it registers again)
(docs/DESIGN.md §5.2, "Member secrets")

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secret_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('proxies', schema=None) as batch_op:
        batch_op.drop_column('secret_hash')
