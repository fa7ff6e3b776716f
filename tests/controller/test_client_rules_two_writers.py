"""Client rules written by two controllers on one database at once (an old leader and a new one, or two processes
on one PostgreSQL): each controller's check for a rule of the same match and pattern runs under its own
in-process lock only, so both checks can pass before either commits. The database keeps one rule per match and
pattern (docs/DESIGN.md §3.4); the controller that loses answers 409, as it does when its own check finds the rule.

The race is made deterministic: the other controller's whole PUT runs inside the first one's transaction, after
its check and before its write reaches the database (its session's before_flush)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event

from fedkafka.controller.models import ClientRuleRow


def _in_the_middle_of_the_next_rule_write(api, meanwhile: Callable[[], None]) -> None:
    """`meanwhile` runs once, inside `api`'s next client rule write: after its checks, before its INSERT/UPDATE."""
    done: list[bool] = []

    def before_flush(session, _context, _instances) -> None:
        touched = [o for o in (*session.new, *session.dirty) if isinstance(o, ClientRuleRow)]
        if touched and not done:
            done.append(True)
            meanwhile()

    event.listen(api.controller.session, "before_flush", before_flush)


def _stored(api) -> list[tuple[str, str, str, str]]:
    return [(r["name"], r["match"], r["pattern"], r["pool"]) for r in api.get("/v1/client-rules").json()]


def _put(api, name: str, match: str, pattern: str, pool: str):
    return api.put(f"/v1/client-rules/{name}", json={"match": match, "pattern": pattern, "pool": pool})


def test_two_controllers_adding_one_pattern_at_once_store_one_rule_and_the_later_answers_409(make_api):
    first, second = make_api(), make_api()  # two controllers, one database, each with its own lock
    _in_the_middle_of_the_next_rule_write(
        first, lambda: _put(second, "a-old", "exact", "billing", "old").raise_for_status())
    late = _put(first, "z-new", "exact", "billing", "new")
    assert _stored(first) == [("a-old", "exact", "billing", "old")], (late.status_code, late.text)
    assert late.status_code == 409 and "a-old" in late.json()["detail"], late.text


def test_a_rule_moved_onto_a_pattern_another_controller_just_took_is_refused(make_api):
    first, second = make_api(), make_api()
    _put(first, "r1", "prefix", "app-", "apps").raise_for_status()
    _in_the_middle_of_the_next_rule_write(
        first, lambda: _put(second, "r2", "prefix", "web-", "web").raise_for_status())
    late = _put(first, "r1", "prefix", "web-", "apps")
    assert _stored(first) == [("r1", "prefix", "app-", "apps"), ("r2", "prefix", "web-", "web")], late.text
    assert late.status_code == 409 and "r2" in late.json()["detail"], late.text


def test_two_controllers_creating_one_rule_name_at_once_answer_409_not_500(make_api):
    """Both find no rule of that name and insert it: the primary key refuses the second, which answers 409 (it was
    an unanswered IntegrityError, a 500); the rule is the first one's."""
    first, second = make_api(), make_api()
    _in_the_middle_of_the_next_rule_write(
        first, lambda: _put(second, "r", "exact", "one", "p1").raise_for_status())
    late = _put(first, "r", "exact", "two", "p2")
    assert late.status_code == 409 and "'r' was written by another controller" in late.json()["detail"], late.text
    assert _stored(first) == [("r", "exact", "one", "p1")]
    # the refused controller's next write goes through: nothing of the failed transaction is left over
    assert _put(first, "r", "exact", "two", "p2").json()["changed"] is True
