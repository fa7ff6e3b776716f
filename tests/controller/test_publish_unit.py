"""The publisher hands a view and its JSON body out as one pair. `publish` runs on the controller's writer
thread while streams read on the event loop: a stream that read the new version with the old body marked the
new view sent and never sent it (a proxy worker stayed on view 7 for minutes while view 8 was current)."""

from __future__ import annotations

import json

from fedkafka.controller.publish import Publisher
from fedkafka.view.model import View

seen_mid_publish: list[tuple[int, int]] = []
publisher: Publisher | None = None


class ViewBeingPublished(View):
    """A view whose serialization (inside `publish`) looks at what a concurrent reader would get."""

    def to_dict(self):
        if publisher is not None:
            view, body = publisher.current()
            seen_mid_publish.append((view.version, json.loads(body)["version"]))
            seen_mid_publish.append((publisher.view.version, json.loads(publisher.body)["version"]))
        return View.to_dict(self)


def test_a_reader_during_a_publish_sees_the_old_pair_or_the_new_one_never_a_mix():
    global publisher
    publisher = Publisher(View(version=7))
    assert publisher.publish(ViewBeingPublished(version=8))
    assert seen_mid_publish and all(version == body_version for version, body_version in seen_mid_publish), \
        seen_mid_publish
    view, body = publisher.current()
    assert view.version == json.loads(body)["version"] == 8


def test_an_older_view_is_not_published():
    pub = Publisher(View(version=3))
    assert not pub.publish(View(version=3)) and not pub.publish(View(version=2))
    assert pub.view.version == 3 and json.loads(pub.body)["version"] == 3
