"""The per-process head cache: least recently used heads go first once past the byte budget."""

from __future__ import annotations

import numpy as np

from adapters import LinearHead
from service.cache import HeadCache


def a_head(seed: int) -> LinearHead:
    rng = np.random.default_rng(seed)
    return LinearHead().fit(rng.normal(size=(6, 4)), ["a", "b", "c"] * 2)


def test_the_least_recently_used_head_is_evicted_once_the_budget_is_passed():
    cache = HeadCache(max_bytes=250)
    heads = {i: a_head(i) for i in (1, 2, 3)}
    cache.put(1, heads[1], 100)
    cache.put(2, heads[2], 100)
    assert cache.get(1) is heads[1]  # 1 is now more recent than 2
    cache.put(3, heads[3], 100)
    assert cache.get(2) is None
    assert cache.get(1) is heads[1] and cache.get(3) is heads[3]
    assert (len(cache), cache.nbytes) == (2, 200)


def test_a_head_larger_than_the_budget_is_served_uncached_and_evicts_nothing():
    cache = HeadCache(max_bytes=250)
    kept = a_head(1)
    cache.put(1, kept, 200)
    cache.put(2, a_head(2), 251)
    assert cache.get(2) is None
    assert cache.get(1) is kept
    assert cache.nbytes == 200


def test_putting_the_same_version_again_counts_its_bytes_once():
    cache = HeadCache(max_bytes=250)
    head = a_head(1)
    cache.put(1, head, 100)
    cache.put(1, head, 120)
    assert (len(cache), cache.nbytes) == (1, 120)
