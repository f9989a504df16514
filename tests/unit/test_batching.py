"""How the batcher cuts length-sorted inputs into forward passes."""

from __future__ import annotations

from service.batcher import cut_batches, first_batch


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


def first(order: list[int], max_tokens: int = 64, max_items: int = 4) -> list[int]:
    return first_batch(order, lambda c: c, max_tokens, max_items)


def test_a_patient_pass_starts_with_the_waiting_items_and_fills_up_with_short_newcomers():
    waited, newcomers = [20, 30], [2, 3, 40]
    # The waiting items pad the batch to 30 tokens: under 64 no third item fits (3 x 30 > 64);
    # under 128 the short newcomers ride along, and the item cap of 4 leaves the long one out.
    assert first(waited + newcomers, max_tokens=64) == [20, 30]
    assert first(waited + newcomers, max_tokens=128) == [20, 30, 2, 3]
    assert first([5, 6, 1, 1, 1], max_tokens=64, max_items=4) == [5, 6, 1, 1]


def test_the_first_batch_of_a_sorted_run_is_the_first_cut():
    costs = sorted([7, 1, 33, 12, 12, 90, 4, 16, 15, 64, 2])
    for max_tokens, max_items in ((128, 3), (64, 8), (32, 2)):
        assert first(costs, max_tokens, max_items) == cut(costs, max_tokens, max_items)[0]
    assert first([200, 300], max_tokens=64) == [200]  # over the budget alone: a pass of its own
