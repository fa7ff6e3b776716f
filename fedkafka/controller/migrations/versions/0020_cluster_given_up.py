"""cluster given up: a failover's mark on the cluster it gave up, carried by the view so that ListOffsets tells a
decommission's read_only step from a failover's (docs/DESIGN.md §9.2). NULL unless a controller with the mark sets it
(`models.cluster_given_up`): read as before the mark (read_only given up, draining not), so a failover an older
controller finishes during a rolling upgrade, after another controller ran this migration, still gives its cluster
up. The upgrade sets False only on a read_only cluster whose last failover or decommission run is a decommission: only
a decommission's read_only step stops counting as given up

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_LAST_RUN = ("SELECT w.kind FROM workflows w WHERE w.cluster = clusters.id AND w.kind IN ('failover', 'decommission') "
             "ORDER BY w.id DESC LIMIT 1")


def upgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('given_up', sa.Boolean(), nullable=True))
    op.get_bind().execute(sa.text(f"UPDATE clusters SET given_up = :no WHERE state = 'read_only' "
                                  f"AND ({_LAST_RUN}) = 'decommission'"), {"no": False})


def downgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('given_up')
