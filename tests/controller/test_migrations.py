"""The Alembic migrations create exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from fedkafka.controller import db
from fedkafka.controller.models import Base, cluster_given_up


def test_migrations_match_the_models_and_run_twice(empty_db_url):
    engine = db.make_engine(empty_db_url)
    db.migrate(engine)
    db.migrate(engine)  # idempotent: a restarted controller migrates again
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == "0022"
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
        assert MigrationContext.configure(conn).get_current_revision() == "0022"
    for engine in engines:
        engine.dispose()


def test_revision_0010_claims_the_physical_partitions_in_use(empty_db_url):
    """An upgraded database claims what its segments and unfinished moves use (docs/DESIGN.md §4.13); a physical
    partition two logical partitions already share (possible before it) goes to the first, without failing."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.execute(text("INSERT INTO topics (name, topic_id, partitions, placement, config_json) "
                          "VALUES ('t', 'x', 3, 'blocks', '{}')"))
        segment = ("INSERT INTO segments (topic, \"partition\", seq, cluster, physical_topic, physical_partition, "
                   "phys_start, phys_end, logical_base) VALUES ('t', :p, :seq, :c, 't', :pp, 0, :end, 0)")
        for p, seq, c, pp, end in [(0, 0, "c1", 0, None), (1, 0, "c1", 1, 5), (1, 1, "c2", 0, None),
                                   (2, 0, "c2", 0, None)]:  # p2 shares c2/t/0 with p1: the bug this revision ends
            conn.execute(text(segment), {"p": p, "seq": seq, "c": c, "pp": pp, "end": end})
        move = ("INSERT INTO moves (topic, \"partition\", from_cluster, to_cluster, to_topic, to_partition, state, "
                "updated_at, gap) VALUES ('t', :p, 'c1', 'c3', 't', :pp, :state, 0, 0)")
        conn.execute(text(move), {"p": 0, "pp": 0, "state": "frozen"})
        conn.execute(text(move), {"p": 0, "pp": 1, "state": "rolled_back"})
    db.migrate(engine)
    with engine.connect() as conn:
        claims = set(conn.execute(text('SELECT cluster, physical_topic, physical_partition, topic, "partition" '
                                       "FROM physical_partitions")))
    assert claims == {("c1", "t", 0, "t", 0), ("c1", "t", 1, "t", 1), ("c2", "t", 0, "t", 1), ("c3", "t", 0, "t", 0)}
    engine.dispose()


def test_revision_0011_names_each_unfinished_moves_topic_and_keeps_one_per_partition(empty_db_url):
    """An upgraded database records the topic id of every unfinished move (the incarnation its seal and publish
    check, docs/DESIGN.md §4.1), and of two unfinished moves of one partition (possible before it: two plans
    racing) keeps the furthest along, so the unique index over unfinished moves can be made."""
    from sqlalchemy.exc import IntegrityError

    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    move = ("INSERT INTO moves (topic, \"partition\", from_cluster, to_cluster, to_topic, to_partition, state, "
            "updated_at, gap) VALUES (:t, :p, 'c1', 'c2', :t, :pp, :state, 0, 0)")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
        conn.execute(text("INSERT INTO topics (name, topic_id, partitions, placement, config_json) "
                          "VALUES ('t', 'x', 2, 'blocks', '{}')"))
        for t, p, pp, state in [("t", 0, 1, "frozen"), ("t", 0, 2, "sealed"), ("t", 0, 3, "planned"),
                                ("t", 1, 4, "frozen"), ("t", 1, 5, "done"), ("gone", 0, 1, "frozen")]:
            conn.execute(text(move), {"t": t, "p": p, "pp": pp, "state": state})
    db.migrate(engine)
    with engine.connect() as conn:
        rows = list(conn.execute(text('SELECT topic, "partition", state, topic_id, error FROM moves ORDER BY id')))
    dropped = "rolled back by the upgrade to revision 0011: another unfinished move of the partition was kept"
    assert [tuple(r) for r in rows] == [("t", 0, "rolled_back", "x", dropped), ("t", 0, "sealed", "x", None),
                                        ("t", 0, "rolled_back", "x", dropped), ("t", 1, "frozen", "x", None),
                                        ("t", 1, "done", None, None), ("gone", 0, "frozen", None, None)]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(move), {"t": "t", "p": 1, "pp": 6, "state": "planned"})
    engine.dispose()


def test_revision_0012_adds_the_scanned_ends_empty_and_its_downgrade_keeps_the_claims(empty_db_url):
    """An upgraded database has no stored log end yet (the first scan writes them: until then a failover seals
    as before, at what its own scans read or the segment's start, docs/DESIGN.md §9.1); the claims survive the
    upgrade and the downgrade (SQLite rebuilds the table for each)."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    claim = ('INSERT INTO physical_partitions (cluster, physical_topic, physical_partition, topic, "partition") '
             "VALUES ('c1', 't', :pp, 't', :p)")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
        conn.execute(text("INSERT INTO topics (name, topic_id, partitions, placement, config_json) "
                          "VALUES ('t', 'x', 2, 'blocks', '{}')"))
        for p in (0, 1):
            conn.execute(text(claim), {"pp": p + 3, "p": p})
    db.migrate(engine)
    select_claims = 'SELECT cluster, physical_topic, physical_partition, topic, "partition" FROM physical_partitions'
    with engine.begin() as conn:
        rows = set(conn.execute(text("SELECT physical_partition, scanned_end, scanned_at FROM physical_partitions")))
        assert rows == {(3, None, None), (4, None, None)}
        conn.execute(text("UPDATE physical_partitions SET scanned_end = 12345678901, scanned_at = 1.5 "
                          "WHERE physical_partition = 3"))  # above 2^32: a log end is a 64-bit offset
        assert conn.execute(text("SELECT scanned_end FROM physical_partitions WHERE physical_partition = 3")
                            ).scalar_one() == 12345678901
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011")
        assert MigrationContext.configure(conn).get_current_revision() == "0011"
        assert set(conn.execute(text(select_claims))) == {("c1", "t", 3, "t", 0), ("c1", "t", 4, "t", 1)}
    engine.dispose()


def test_revision_0013_leaves_the_target_end_of_moves_frozen_before_it_unknown_and_its_downgrade_keeps_them(
        empty_db_url):
    """A move frozen before the upgrade has no recorded target end (NULL: it seals as before unless the controller saw
    the database lose commits, docs/DESIGN.md §3.3 "Lost commits"); the moves survive the downgrade."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0012")
        conn.execute(text("INSERT INTO moves (topic, \"partition\", from_cluster, to_cluster, to_topic, to_partition, "
                          "state, updated_at, gap) VALUES ('t', 0, 'c1', 'c2', 't', 0, 'frozen', 0, 0)"))
    db.migrate(engine)
    with engine.begin() as conn:
        assert list(conn.execute(text("SELECT state, target_end FROM moves"))) == [("frozen", None)]
        conn.execute(text("UPDATE moves SET target_end = 12345678901"))  # a 64-bit log end
        assert conn.execute(text("SELECT target_end FROM moves")).scalar_one() == 12345678901
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
        assert list(conn.execute(text("SELECT topic, state FROM moves"))) == [("t", "frozen")]
    engine.dispose()


def test_revision_0014_leaves_moves_planned_and_held_before_it_without_planned_end_or_reason_and_downgrades(
        empty_db_url):
    """A move planned before the upgrade has no planned target end (NULL: its freeze does not check it), one held
    before it no reason (NULL: the sweeper does not read its target again); the moves survive the downgrade."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    insert = ("INSERT INTO moves (topic, \"partition\", from_cluster, to_cluster, to_topic, to_partition, state, "
              "updated_at, gap) VALUES ('t', {p}, 'c1', 'c2', 't', {p}, '{state}', 0, 0)")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
        conn.execute(text(insert.format(p=0, state="planned")))
        conn.execute(text(insert.format(p=1, state="held")))
    db.migrate(engine)
    with engine.begin() as conn:
        assert list(conn.execute(text("SELECT state, planned_target_end, held_for FROM moves ORDER BY id"))) == [
            ("planned", None, None), ("held", None, None)]
        conn.execute(text("UPDATE moves SET planned_target_end = 12345678901, held_for = 'target_unread'"))
        assert conn.execute(text("SELECT max(planned_target_end) FROM moves")).scalar_one() == 12345678901
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0013")
        assert list(conn.execute(text("SELECT state FROM moves ORDER BY id"))) == [("planned",), ("held",)]
    engine.dispose()


def test_revision_0015_adds_pending_deletions_empty_and_its_downgrade_keeps_the_topics(empty_db_url):
    """A database upgraded to 0015 records no pending deletion (deletions before it were best effort: nothing to
    block); the table takes a row per (cluster, physical topic) and the downgrade drops it, topics kept."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0014")
        conn.execute(text("INSERT INTO topics (name, topic_id, partitions, placement, config_json) "
                          "VALUES ('t', 'id1', 1, 'blocks', '{}')"))
        command.upgrade(cfg, "0015")
    insert = ("INSERT INTO pending_deletions (cluster, physical_topic, topic, deleted_at, attempts) "
              "VALUES ('c2', '{name}', 'gone', 1.5, 0)")
    with engine.begin() as conn:
        assert list(conn.execute(text("SELECT * FROM pending_deletions"))) == []
        conn.execute(text(insert.format(name="gone")))
        conn.execute(text(insert.format(name="__fedkafka_shadow_gone")))
        assert list(conn.execute(text("SELECT physical_topic, topic, attempts, last_error FROM pending_deletions "
                                      "ORDER BY physical_topic"))) == [
            ("__fedkafka_shadow_gone", "gone", 0, None), ("gone", "gone", 0, None)]
    with pytest.raises(IntegrityError), engine.begin() as conn:  # one row per physical topic of a cluster
        conn.execute(text(insert.format(name="gone")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0014")
        assert MigrationContext.configure(conn).get_current_revision() == "0014"
        assert list(conn.execute(text("SELECT name FROM topics"))) == [("t",)]
    db.migrate(engine)
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT * FROM pending_deletions"))) == []
    engine.dispose()


def test_revision_0016_gives_each_pending_deletion_its_own_record_id_and_no_topic_id(empty_db_url):
    """A row pending before 0016 gets a record id of its own (each a different one) and no Kafka topic id: its next
    attempt learns the id before deleting by it (docs/DESIGN.md §5.8); the downgrade keeps the rows."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    insert = ("INSERT INTO pending_deletions (cluster, physical_topic, topic, deleted_at, attempts) "
              "VALUES ('c2', '{name}', 'gone', 1.5, 0)")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0015")
        conn.execute(text(insert.format(name="gone")))
        conn.execute(text(insert.format(name="__fedkafka-shadow-gone")))
    db.migrate(engine)
    with engine.begin() as conn:
        rows = list(conn.execute(text("SELECT physical_topic, kafka_topic_id, record_id FROM pending_deletions "
                                      "ORDER BY physical_topic")))
        assert [(name, kafka_id) for name, kafka_id, _ in rows] == [("__fedkafka-shadow-gone", None), ("gone", None)]
        record_ids = {record_id for _, _, record_id in rows}
        assert len(record_ids) == 2 and all(len(r) == 32 for r in record_ids)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0015")
        assert list(conn.execute(text("SELECT physical_topic FROM pending_deletions ORDER BY physical_topic"))) == [
            ("__fedkafka-shadow-gone",), ("gone",)]
    engine.dispose()


def test_revision_0020_marks_given_up_the_read_only_clusters_no_decommission_made_read_only(empty_db_url):
    """Before the mark, every read_only cluster was read as given up (docs/DESIGN.md §9.2). The upgrade keeps that for
    each one a failover made read_only last, or no workflow did (the operator's state change), and gives up no
    cluster a decommission made read_only last, nor an active or draining one; the downgrade keeps the clusters.
    Only the decommission's read_only is written (False): the others stay NULL, read as before the mark, so an older
    controller's failover of an active cluster after the upgrade (its state alone, during a rolling upgrade) is read
    as given up."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    clusters = {"failed": "read_only", "decommissioning": "read_only", "failed_then_decommissioned": "read_only",
                "by_hand": "read_only", "draining": "draining", "active": "active", "older_failover": "active"}
    runs = [("failed", "failover"), ("decommissioning", "scale_up"), ("decommissioning", "decommission"),
            ("failed_then_decommissioned", "failover"), ("failed_then_decommissioned", "decommission"),
            ("draining", "failover"), ("active", "failover")]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0019")
        for i, (cid, state) in enumerate(clusters.items()):
            conn.execute(text("INSERT INTO clusters (id, ordinal, bootstrap, state, coordination, reachable) "
                              "VALUES (:id, :o, 'b:1', :state, :no, :no)"), {"id": cid, "o": i, "state": state,
                                                                             "no": False})
        for cid, kind in runs:
            conn.execute(text("INSERT INTO workflows (kind, cluster, state, step, params_json, created_at, "
                              "record_json, updated_at) VALUES (:kind, :cid, 'done', '', '{}', 0, '{}', 0)"),
                         {"kind": kind, "cid": cid})
    db.migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE clusters SET state = 'read_only' WHERE id = 'older_failover'"))
        rows = {r.id: r for r in conn.execute(text("SELECT id, state, given_up FROM clusters"))}
        assert {cid for cid, r in rows.items() if r.given_up is not None} == {"decommissioning",
                                                                            "failed_then_decommissioned"}
        assert {cid for cid, r in rows.items() if cluster_given_up(r)} == {"failed", "by_hand", "older_failover"}
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0019")
        assert {cid for (cid,) in conn.execute(text("SELECT id FROM clusters"))} == set(clusters)
    engine.dispose()


def test_revision_0021_leaves_moves_planned_before_it_undecided_and_downgrades(empty_db_url):
    """A move planned before the upgrade has no recorded returning decision (NULL: its freeze and seal read it as
    returning, docs/DESIGN.md §6.3); the column takes a boolean on both databases, and the moves survive the
    downgrade."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    insert = ("INSERT INTO moves (topic, \"partition\", from_cluster, to_cluster, to_topic, to_partition, state, "
              "updated_at, gap) VALUES ('t', {p}, 'c1', 'c2', 't', {p}, 'planned', 0, 0)")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0020")
        conn.execute(text(insert.format(p=0)))
        conn.execute(text(insert.format(p=1)))
    db.migrate(engine)
    with engine.begin() as conn:
        assert list(conn.execute(text("SELECT returning_target FROM moves ORDER BY id"))) == [(None,), (None,)]
        conn.execute(text("UPDATE moves SET returning_target = (\"partition\" = 0)"))
        assert list(conn.execute(text("SELECT returning_target FROM moves ORDER BY id"))) == [(True,), (False,)]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
        assert list(conn.execute(text('SELECT "partition" FROM moves ORDER BY id'))) == [(0,), (1,)]
    engine.dispose()


def test_revision_0022_starts_every_cluster_at_freeze_generation_0_and_downgrades(empty_db_url):
    """A cluster registered before the upgrade (frozen or not) gets generation 0, which the next freeze counts past
    (docs/DESIGN.md §10.1); the clusters survive the downgrade."""
    engine = db.make_engine(empty_db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    insert = ("INSERT INTO clusters (id, ordinal, bootstrap, state, coordination, reachable, commits_frozen) "
              "VALUES ('{c}', {n}, 'b:9092', 'active', {coord}, {coord}, {coord})")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0021")
        conn.execute(text(insert.format(c="c1", n=1, coord="true")))
        conn.execute(text(insert.format(c="c2", n=2, coord="false")))
    db.migrate(engine)
    with engine.begin() as conn:
        assert list(conn.execute(text("SELECT id, freeze_generation FROM clusters ORDER BY id"))) == [("c1", 0),
                                                                                                      ("c2", 0)]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0021")
        assert [cid for (cid,) in conn.execute(text("SELECT id FROM clusters ORDER BY id"))] == ["c1", "c2"]
    engine.dispose()
