"""move identity: a move names its topic's incarnation; one unfinished move per logical partition (docs/DESIGN.md §4.1)

Revision ID: 0011
Revises: 0010
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

UNFINISHED = "state NOT IN ('done', 'rolled_back')"
INDEX = 'ux_moves_unfinished_partition'
PROGRESS = {'planned': 0, 'frozen': 1, 'sealed': 2}  # the furthest of two unfinished moves of a partition is kept


def upgrade() -> None:
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topic_id', sa.String(length=32), nullable=True))
    conn = op.get_bind()
    # an unfinished move belongs to the topic of its name now (one deleted and created again since is not told
    # apart: before this revision nothing recorded it); finished ones keep None, their incarnation is unknown
    conn.execute(sa.text('UPDATE moves SET topic_id = (SELECT topics.topic_id FROM topics WHERE topics.name = '
                         f'moves.topic) WHERE {UNFINISHED}'))
    _settle_duplicates(conn)
    op.create_index(INDEX, 'moves', ['topic', 'partition'], unique=True, sqlite_where=sa.text(UNFINISHED),
                    postgresql_where=sa.text(UNFINISHED))


def _settle_duplicates(conn) -> None:
    """Two unfinished moves of one logical partition could be recorded before this revision (two plans racing):
    the furthest along is kept (a sealed one's seal was read from the segment both froze), the others marked
    rolled back, leaving the chain to the kept one. Logged: the index cannot be made otherwise."""
    kept: dict[tuple[str, int], tuple[int, int]] = {}
    dropped = []
    rows = conn.execute(sa.text(f'SELECT id, topic, "partition", state FROM moves WHERE {UNFINISHED} ORDER BY id'))
    for move_id, topic, partition, state in rows:
        mine = (PROGRESS.get(state, 0), move_id)
        other = kept.get((topic, partition))
        if other is None:
            kept[(topic, partition)] = mine
            continue
        best = max(other, mine, key=lambda m: (m[0], -m[1]))  # furthest, then oldest
        dropped.append(other[1] if best is mine else move_id)
        kept[(topic, partition)] = best
        log.warning("moves %d and %d of %s/%s were both unfinished: keeping %d", other[1], move_id, topic, partition,
                    best[1])
    for move_id in dropped:
        conn.execute(sa.text("UPDATE moves SET state = 'rolled_back', error = :error WHERE id = :id"),
                     {'id': move_id, 'error': 'rolled back by the upgrade to revision 0011: another unfinished move '
                                              'of the partition was kept'})


def downgrade() -> None:
    op.drop_index(INDEX, table_name='moves')
    with op.batch_alter_table('moves', schema=None) as batch_op:
        batch_op.drop_column('topic_id')
