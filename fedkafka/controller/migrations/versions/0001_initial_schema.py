"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Alembic's generated commands, one function per table (in their original order: chains and segments
    # reference topics). The schema is history: tests/controller/test_migration_0001.py holds it.
    for create in (_client_rules, _clusters, _counters, _proxies, _topics,
                   _view_state, _workflows, _chains, _segments):
        create()


def _client_rules() -> None:
    op.create_table(
        'client_rules',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('match', sa.String(length=8), nullable=False),
        sa.Column('pattern', sa.String(length=256), nullable=False),
        sa.Column('pool', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('name')
    )


def _clusters() -> None:
    op.create_table(
        'clusters',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('ordinal', sa.Integer(), nullable=False),
        sa.Column('bootstrap', sa.String(length=1024), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('coordination', sa.Boolean(), nullable=False),
        sa.Column('reachable', sa.Boolean(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )


def _counters() -> None:
    op.create_table(
        'counters',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name')
    )


def _proxies() -> None:
    op.create_table(
        'proxies',
        sa.Column('node_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('instance_id', sa.String(length=256), nullable=False),
        sa.Column('host', sa.String(length=256), nullable=False),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=8), nullable=False),
        sa.Column('pool', sa.String(length=128), nullable=False),
        sa.Column('lease_expires', sa.Float(), nullable=False),
        sa.Column('applied_version', sa.BigInteger(), nullable=False),
        sa.Column('load_json', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('node_id'),
        sa.UniqueConstraint('instance_id')
    )


def _topics() -> None:
    op.create_table(
        'topics',
        sa.Column('name', sa.String(length=249), nullable=False),
        sa.Column('topic_id', sa.String(length=32), nullable=False),
        sa.Column('partitions', sa.Integer(), nullable=False),
        sa.Column('placement', sa.String(length=16), nullable=False),
        sa.Column('config_json', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('name')
    )


def _view_state() -> None:
    op.create_table(
        'view_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('committed_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )


def _workflows() -> None:
    op.create_table(
        'workflows',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('cluster', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('step', sa.String(length=64), nullable=False),
        sa.Column('params_json', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )


def _chains() -> None:
    op.create_table(
        'chains',
        sa.Column('topic', sa.String(length=249), nullable=False),
        sa.Column('partition', sa.Integer(), nullable=False),
        sa.Column('leader_epoch', sa.Integer(), nullable=False),
        sa.Column('frozen', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['topic'], ['topics.name'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('topic', 'partition')
    )


def _segments() -> None:
    op.create_table(
        'segments',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('topic', sa.String(length=249), nullable=False),
        sa.Column('partition', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('cluster', sa.String(length=64), nullable=False),
        sa.Column('physical_topic', sa.String(length=249), nullable=False),
        sa.Column('physical_partition', sa.Integer(), nullable=False),
        sa.Column('phys_start', sa.BigInteger(), nullable=False),
        sa.Column('phys_end', sa.BigInteger(), nullable=True),
        sa.Column('logical_base', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['topic'], ['topics.name'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('topic', 'partition', 'seq')
    )
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segments_topic'), ['topic'], unique=False)


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segments_topic'))

    op.drop_table('segments')
    op.drop_table('chains')
    op.drop_table('workflows')
    op.drop_table('view_state')
    op.drop_table('topics')
    op.drop_table('proxies')
    op.drop_table('counters')
    op.drop_table('clusters')
    op.drop_table('client_rules')
    # ### end Alembic commands ###
