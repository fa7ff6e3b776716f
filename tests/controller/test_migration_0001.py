"""Revision 0001 is history: deployed databases were created by it, so its schema must never change (its code
may be reorganised). The statements below are what it created on SQLite when it was first released."""

from __future__ import annotations

import sqlite3

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from fedkafka.controller.db import MIGRATIONS

SCHEMA_0001 = """\
CREATE INDEX ix_segments_topic ON segments (topic)

CREATE TABLE chains (
topic VARCHAR(249) NOT NULL,
partition INTEGER NOT NULL,
leader_epoch INTEGER NOT NULL,
frozen BOOLEAN NOT NULL,
PRIMARY KEY (topic, partition),
FOREIGN KEY(topic) REFERENCES topics (name) ON DELETE CASCADE
)

CREATE TABLE client_rules (
name VARCHAR(128) NOT NULL,
"match" VARCHAR(8) NOT NULL,
pattern VARCHAR(256) NOT NULL,
pool VARCHAR(128) NOT NULL,
PRIMARY KEY (name)
)

CREATE TABLE clusters (
id VARCHAR(64) NOT NULL,
ordinal INTEGER NOT NULL,
bootstrap VARCHAR(1024) NOT NULL,
state VARCHAR(16) NOT NULL,
coordination BOOLEAN NOT NULL,
reachable BOOLEAN NOT NULL,
last_error TEXT,
PRIMARY KEY (id)
)

CREATE TABLE counters (
name VARCHAR(64) NOT NULL,
value BIGINT NOT NULL,
PRIMARY KEY (name)
)

CREATE TABLE proxies (
node_id INTEGER NOT NULL,
instance_id VARCHAR(256) NOT NULL,
host VARCHAR(256) NOT NULL,
port INTEGER NOT NULL,
role VARCHAR(8) NOT NULL,
pool VARCHAR(128) NOT NULL,
lease_expires FLOAT NOT NULL,
applied_version BIGINT NOT NULL,
load_json TEXT NOT NULL,
PRIMARY KEY (node_id),
UNIQUE (instance_id)
)

CREATE TABLE segments (
id INTEGER NOT NULL,
topic VARCHAR(249) NOT NULL,
partition INTEGER NOT NULL,
seq INTEGER NOT NULL,
cluster VARCHAR(64) NOT NULL,
physical_topic VARCHAR(249) NOT NULL,
physical_partition INTEGER NOT NULL,
phys_start BIGINT NOT NULL,
phys_end BIGINT,
logical_base BIGINT NOT NULL,
PRIMARY KEY (id),
FOREIGN KEY(topic) REFERENCES topics (name) ON DELETE CASCADE,
UNIQUE (topic, partition, seq)
)

CREATE TABLE topics (
name VARCHAR(249) NOT NULL,
topic_id VARCHAR(32) NOT NULL,
partitions INTEGER NOT NULL,
placement VARCHAR(16) NOT NULL,
config_json TEXT NOT NULL,
PRIMARY KEY (name)
)

CREATE TABLE view_state (
id INTEGER NOT NULL,
version BIGINT NOT NULL,
body TEXT NOT NULL,
committed_at FLOAT NOT NULL,
PRIMARY KEY (id)
)

CREATE TABLE workflows (
id INTEGER NOT NULL,
kind VARCHAR(32) NOT NULL,
cluster VARCHAR(64) NOT NULL,
state VARCHAR(16) NOT NULL,
step VARCHAR(64) NOT NULL,
params_json TEXT NOT NULL,
created_at FLOAT NOT NULL,
PRIMARY KEY (id)
)"""


def _schema_after_0001(path) -> str:
    engine = create_engine(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'alembic_version' "
                            "ORDER BY type, name").fetchall()
    return "\n\n".join("\n".join(line.strip() for line in sql.splitlines()) for (sql,) in rows)


def test_revision_0001_creates_the_schema_it_always_created(tmp_path):
    assert _schema_after_0001(tmp_path / "fresh.db") == SCHEMA_0001
