"""client rule pattern unique: one client rule per (match, pattern), a constraint of the database, not only a check
under one controller's lock (docs/DESIGN.md §3.4)

Two controllers writing at once (an old leader and a new one, two processes on one PostgreSQL) could both store a
rule of one match and pattern before this revision. The upgrade keeps, of each such group, the rule first by name
(in the database's own order of names, the order the controller lists rules in): the one the name service
routed by (fedkafka/client_rules.py: an exact rule, or the first of equally long prefixes, in that order), so no
client.id changes pool. The others never routed a client; they are deleted and each is logged (name, match,
pattern, pool) at WARNING. The downgrade drops the constraint; it does not bring the deleted rules back.

Revision ID: 0017
Revises: 0016
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

CONSTRAINT = 'uq_client_rules_match_pattern'
RULES = sa.table('client_rules', sa.column('name', sa.String), sa.column('match', sa.String),
                 sa.column('pattern', sa.String), sa.column('pool', sa.String))


def upgrade() -> None:
    _delete_the_rules_that_never_routed(op.get_bind())
    with op.batch_alter_table('client_rules', schema=None) as batch_op:
        batch_op.create_unique_constraint(CONSTRAINT, ['match', 'pattern'])


def _delete_the_rules_that_never_routed(conn) -> None:
    """Of each match and pattern held by several rules, every rule but the first by name is deleted and logged."""
    groups = conn.execute(sa.select(RULES.c.match, RULES.c.pattern, sa.func.min(RULES.c.name))
                          .group_by(RULES.c.match, RULES.c.pattern).having(sa.func.count() > 1)).all()
    for match, pattern, kept in groups:
        same = (RULES.c.match == match) & (RULES.c.pattern == pattern) & (RULES.c.name != kept)
        for name, pool in conn.execute(sa.select(RULES.c.name, RULES.c.pool).where(same).order_by(RULES.c.name)):
            log.warning("client rule %r (match %s, pattern %r, pool %r) deleted by the upgrade to revision 0017: "
                        "rule %r has that match and pattern and is the one that routed", name, match, pattern, pool,
                        kept)
        conn.execute(sa.delete(RULES).where(same))


def downgrade() -> None:
    with op.batch_alter_table('client_rules', schema=None) as batch_op:
        batch_op.drop_constraint(CONSTRAINT, type_='unique')
