"""Fix of rv1 (tests/proxy/test_rv1_review_start_round.py): a controller listed twice is listed once, so a proxy's
start round asks it once and a client moving on from it does not try it again at once (`controllers.split_urls`)."""

from __future__ import annotations

from fedkafka.controllers import ControllerList, split_urls


def test_a_controller_listed_twice_is_listed_once_in_first_listed_order():
    assert split_urls("http://c/, http://d,http://c,http://d/") == ["http://c", "http://d"]
    assert ControllerList("http://c,http://c/").urls == ["http://c"]
    assert ControllerList(["http://d/", "http://c", "http://d"]).urls == ["http://d", "http://c"]
    listed = ControllerList("http://c,http://c,http://d")
    assert listed.failed("http://c") == "http://d"  # moves on to another controller, not the same one again
