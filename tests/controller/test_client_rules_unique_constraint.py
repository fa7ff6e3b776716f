"""One client rule per match and pattern is a constraint of the database (revision 0017, docs/DESIGN.md §3.4):
the upgrade of a database that already holds several rules of one pair keeps the one that routed (the first by
name) and logs the others it deletes; a rule another writer stored after the controller's own check is a 409."""

from __future__ import annotations

import logging

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from fedkafka.client_rules import pool_for
from fedkafka.controller import db
from fedkafka.controller.models import ClientRuleRow

INSERT = "INSERT INTO client_rules (name, match, pattern, pool) VALUES (:name, :match, :pattern, :pool)"
# three rules of (exact, billing), two of (prefix, app-), and rules of pairs no other rule has
RULES_BEFORE_0017 = [("z-new", "exact", "billing", "new"), ("a-old", "exact", "billing", "old"),
                     ("m-mid", "exact", "billing", "mid"), ("p-billing", "prefix", "billing", "prefixed"),
                     ("c-app", "prefix", "app-", "apps2"), ("b-app", "prefix", "app-", "apps"),
                     ("solo", "exact", "x", "y")]
CLIENT_IDS = ["billing", "billing-2", "app-1", "x", "other"]


def _rules(conn) -> list[dict[str, str]]:
    """As the controller lists them to the name service: every rule, by name."""
    rows = conn.execute(text("SELECT name, match, pattern, pool FROM client_rules ORDER BY name"))
    return [dict(r._mapping) for r in rows]


def _at_revision(engine, revision: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return cfg


def test_revision_0017_keeps_the_rule_that_routed_of_each_pattern_and_logs_the_ones_it_deletes(empty_db_url, caplog):
    engine = db.make_engine(empty_db_url)
    cfg = _at_revision(engine, "0016")
    with engine.begin() as conn:
        for name, match, pattern, pool in RULES_BEFORE_0017:
            conn.execute(text(INSERT), {"name": name, "match": match, "pattern": pattern, "pool": pool})
        routed_before = {cid: pool_for(cid, _rules(conn)) for cid in CLIENT_IDS}
    with caplog.at_level(logging.WARNING):
        db.migrate(engine)
    with engine.connect() as conn:
        rules = _rules(conn)
        assert {cid: pool_for(cid, rules) for cid in CLIENT_IDS} == routed_before  # no client changes pool
    assert [r["name"] for r in rules] == ["a-old", "b-app", "p-billing", "solo"]
    logged = [r.getMessage() for r in caplog.records if "revision 0017" in r.getMessage()]
    assert len(logged) == 3, logged
    for deleted, kept in [("m-mid", "a-old"), ("z-new", "a-old"), ("c-app", "b-app")]:
        assert any(f"client rule '{deleted}'" in m and f"rule '{kept}'" in m for m in logged), (deleted, logged)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(INSERT), {"name": "again", "match": "exact", "pattern": "billing", "pool": "p"})
    # the downgrade drops the constraint and keeps the rules (the deleted ones do not come back)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
        conn.execute(text(INSERT), {"name": "again", "match": "exact", "pattern": "billing", "pool": "p"})
        assert [r["name"] for r in _rules(conn)] == ["a-old", "again", "b-app", "p-billing", "solo"]
    engine.dispose()


def test_revision_0017_on_rules_without_duplicates_deletes_and_logs_nothing(empty_db_url, caplog):
    engine = db.make_engine(empty_db_url)
    _at_revision(engine, "0016")
    unique = [r for r in RULES_BEFORE_0017 if r[0] in ("a-old", "p-billing", "b-app", "solo")]
    with engine.begin() as conn:
        for name, match, pattern, pool in unique:
            conn.execute(text(INSERT), {"name": name, "match": match, "pattern": pattern, "pool": pool})
    with caplog.at_level(logging.WARNING):
        db.migrate(engine)
    with engine.connect() as conn:
        assert [(r["name"], r["match"], r["pattern"], r["pool"]) for r in _rules(conn)] == sorted(unique)
    assert not [r for r in caplog.records if "revision 0017" in r.getMessage()]
    engine.dispose()


def test_two_sessions_on_two_engines_cannot_both_store_a_pattern(empty_db_url):
    """The database itself refuses the second rule of a pair, whoever writes it (no controller, no lock)."""
    engines = [db.make_engine(empty_db_url) for _ in range(2)]
    db.migrate(engines[0])
    first, second = (db.session_factory(e)() for e in engines)
    try:
        assert first.get(ClientRuleRow, "a") is None and second.get(ClientRuleRow, "b") is None
        first.add(ClientRuleRow(name="a", match="prefix", pattern="app-", pool="p1"))
        second.add(ClientRuleRow(name="b", match="prefix", pattern="app-", pool="p2"))
        first.commit()
        with pytest.raises(IntegrityError):
            second.commit()
    finally:
        first.close()
        second.close()
        for e in engines:
            e.dispose()


def test_a_rule_another_writer_stored_after_the_check_is_a_409_naming_it(make_api, db_url):
    """Only the constraint sees it (the controller's check ran before): the IntegrityError is answered 409 naming
    the rule that has the pair, as the check's own refusal is, not 500."""
    api = make_api()
    other = db.make_engine(db_url)
    calls: list[bool] = []

    def another_writer_commits(session, _context, _instances) -> None:
        if not calls and any(isinstance(o, ClientRuleRow) for o in session.new):
            calls.append(True)
            with other.begin() as conn:
                conn.execute(text(INSERT), {"name": "older", "match": "exact", "pattern": "svc", "pool": "o"})

    event.listen(api.controller.session, "before_flush", another_writer_commits)
    refused = api.put("/v1/client-rules/newer", json={"match": "exact", "pattern": "svc", "pool": "n"})
    other.dispose()
    assert calls and refused.status_code == 409, refused.text
    assert "'older' already has match exact pattern 'svc'" in refused.json()["detail"]
    assert [r["name"] for r in api.get("/v1/client-rules").json()] == ["older"]
    assert api.get("/v1/proxies", params={"client_id": "svc"}).json()["pool"] == "o"
