"""The Alembic migrations create exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fedkafka.controller import db
from fedkafka.controller.models import Base


def test_migrations_match_the_models_and_run_twice(empty_db_url):
    engine = db.make_engine(empty_db_url)
    db.migrate(engine)
    db.migrate(engine)  # idempotent: a restarted controller migrates again
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == "0009"
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def test_controllers_starting_together_on_a_fresh_database_migrate_once(empty_db_url):
    """Two controllers started together (`local up --controllers 2`, an HA deployment) both migrate a fresh
    database: the second must wait for the first, not race it into a duplicate CREATE TABLE."""
    engines = [db.make_engine(empty_db_url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def _migrate(engine):
        start.wait()
        try:
            db.migrate(engine)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=_migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engines[0].connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0009"
    for engine in engines:
        engine.dispose()
