"""How the batcher cuts length-sorted inputs into forward passes."""

from __future__ import annotations

from service.batcher import cut_batches


def cut(costs: list[int], max_tokens: int = 64, max_items: int = 4) -> list[list[int]]:
    return list(cut_batches(sorted(costs), lambda c: c, max_tokens, max_items))


def test_batches_respect_the_padded_token_budget():
    batches = cut([5, 5, 6, 6, 30, 31, 40], max_tokens=64)
    assert batches == [[5, 5, 6, 6], [30, 31], [40]]
    for batch in batches:
        assert len(batch) * max(batch) <= 64


def test_batches_respect_the_item_cap():
    assert cut([3] * 10, max_items=4) == [[3, 3, 3, 3], [3, 3, 3, 3], [3, 3]]


def test_an_item_over_the_budget_still_gets_a_batch_of_its_own():
    assert cut([200, 3], max_tokens=64) == [[3], [200]]


def test_every_item_lands_in_exactly_one_batch():
    costs = [7, 1, 33, 12, 12, 90, 4, 16, 15, 64, 2]
    batches = cut(costs, max_tokens=128, max_items=3)
    assert sorted(c for batch in batches for c in batch) == sorted(costs)
