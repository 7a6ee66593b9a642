"""The one meaning of ``limit`` in every command and recipe: a seeded sample, in the input's order.

>>> seeded_subset(list("abcdefgh"), 3, seed=0) == seeded_subset(list("abcdefgh"), 3, seed=0)
True
>>> seeded_subset(list("abc"), 5, seed=0), seeded_subset(list("abc"), None, seed=0)
(['a', 'b', 'c'], ['a', 'b', 'c'])
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["seeded_subset"]

T = TypeVar("T")


def seeded_subset(items: Iterable[T], limit: int | None, seed: int | str) -> list[T]:
    """At most ``limit`` of ``items``: all of them when ``limit`` is None or at least their number, else
    ``limit`` drawn by ``random.Random(seed)``; either way in the input's order. The same seed and items
    give the same subset; a string seed (e.g. ``f"{seed}:{group}"``) draws a group's own sample.

    :raises ValueError: a negative ``limit``, naming it.
    """
    items = list(items)
    if limit is not None and limit < 0:
        raise ValueError(f"limit: expected a count >= 0 or None, got {limit}")
    if limit is None or limit >= len(items):
        return items
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [item for i, item in enumerate(items) if i in keep]
