"""How many examples a Hypothesis property test draws, by the profile tests/conftest.py loaded.

A test names its full count (`@settings(max_examples=examples(300))`): `make test` and CI run it (the `fedkafka`
profile). `make test-unit` loads `fedkafka-unit` (`--hypothesis-profile=fedkafka-unit`), whose max_examples is a
quarter of Hypothesis' default 100: every explicit count shrinks by the same quarter, and the tests that name no
count draw 25.
"""

from __future__ import annotations

from hypothesis import settings

FULL = 100  # max_examples of the `fedkafka` profile (Hypothesis' default)
FEWEST = 2  # the simplest example Hypothesis tries first, and at least one drawn at random


def examples(full: int) -> int:
    """`full` under the `fedkafka` profile; scaled as the loaded profile's max_examples is to FULL otherwise."""
    return max(FEWEST, full * settings.default.max_examples // FULL)
