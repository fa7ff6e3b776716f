"""Engine, sessions and migrations of the config database (SQLite file by default, PostgreSQL alike)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 0x66656B61  # PostgreSQL advisory lock id ("feka") that serializes migrations


def normalize_url(url: str) -> str:
    """A bare path means a SQLite file; `postgresql://` means psycopg 3 (the driver we ship)."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer; FKs are off by default
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # FULL: every commit is fsynced before it returns. NORMAL loses the last commits on a power loss or
            # OS crash (WAL): views proxies applied and acked, numbers reused for other content (DESIGN §3)
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent). Controllers that start together (an HA pair on a
    fresh database) take turns: the first migrates, the others then find the schema at head."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with _sqlite_file_lock(engine), engine.begin() as conn:
        _lock_postgresql_migrations(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _lock_postgresql_migrations(conn: Connection) -> None:
    """A transaction-scoped advisory lock: released by the commit (or rollback) that ends the migration."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite's deferred transactions let two migrators read the same old version: an flock on a file beside the
    database orders them (an in-memory database has no other migrator)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    # read-only: a lock file another user (root at install) created must not stop this one; flock needs no write
    fd = os.open(f"{database}.migrate-lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def begin_writing(s: Session) -> None:
    """Begin `s`'s transaction holding SQLite's write lock (BEGIN IMMEDIATE): what it reads then no other writer
    changes before it commits. pysqlite otherwise begins a transaction only at its first write, so a row read
    before it may be changed by another commit in between (a read-then-write, docs/DESIGN.md §4.9 F4). Call it
    before the session's first statement. PostgreSQL: nothing; such a transaction reads its rows FOR UPDATE."""
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("BEGIN IMMEDIATE"))
