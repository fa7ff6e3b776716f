"""The Alembic migrations create exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fedkafka.controller import db
from fedkafka.controller.models import Base


def test_migrations_match_the_models_and_run_twice(db_url):
    engine = db.make_engine(db_url)
    db.migrate(engine)
    db.migrate(engine)  # idempotent: a restarted controller migrates again
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == "0008"
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()
