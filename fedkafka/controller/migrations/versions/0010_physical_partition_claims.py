"""physical partition claims: one logical partition per physical partition, forever (docs/DESIGN.md §4.13)

Revision ID: 0010
Revises: 0009
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    claims = op.create_table('physical_partitions',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('physical_topic', sa.String(length=249), nullable=False),
    sa.Column('physical_partition', sa.Integer(), nullable=False),
    sa.Column('topic', sa.String(length=249), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['topic'], ['topics.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster', 'physical_topic', 'physical_partition')
    )
    with op.batch_alter_table('physical_partitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_physical_partitions_topic'), ['topic'], unique=False)
    _claim_what_is_in_use(claims)


def _claim_what_is_in_use(claims) -> None:
    """Every segment's physical partition, then every unfinished move's target; the first owner wins (two owners
    of one physical partition can only come from before this revision: logged, not failed on)."""
    conn = op.get_bind()
    owned: dict[tuple, tuple] = {}
    rows = [*conn.execute(sa.text('SELECT cluster, physical_topic, physical_partition, topic, "partition" '
                                  'FROM segments ORDER BY id')),
            *conn.execute(sa.text('SELECT to_cluster, to_topic, to_partition, topic, "partition" FROM moves '
                                  "WHERE state NOT IN ('done', 'rolled_back') AND topic IN (SELECT name FROM topics) "
                                  'ORDER BY id'))]
    for cluster, physical_topic, physical_partition, topic, partition in rows:
        key = (cluster, physical_topic, physical_partition)
        if key in owned and owned[key] != (topic, partition):
            log.warning("physical partition %s/%s/%s is used by %s/%s and %s/%s", *key, *owned[key], topic, partition)
        owned.setdefault(key, (topic, partition))
    if owned:
        op.bulk_insert(claims, [{'cluster': c, 'physical_topic': t, 'physical_partition': p, 'topic': lt,
                                 'partition': lp} for (c, t, p), (lt, lp) in owned.items()])


def downgrade() -> None:
    with op.batch_alter_table('physical_partitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_physical_partitions_topic'))
    op.drop_table('physical_partitions')
