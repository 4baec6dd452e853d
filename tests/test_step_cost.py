"""Pass planning from a forward pass's cost (fixed + tokens): prefill grouping and draft width, checked against
hand computation and against every possible grouping."""

import random

from llamabench.backends.hf.step_cost import draft_width, prefill_chunks


def cost(chunks: list[list[int]], lengths: list[int], fixed: int) -> int:
    return sum(fixed + len(chunk) * max(lengths[i] for i in chunk) for chunk in chunks)


def partitions(items: list[int]):
    """Every way to split ``items`` into non-empty groups."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]


def test_prompts_of_very_different_lengths_prefill_apart():
    # One pass padded to 200 costs 18 + 4 x 200 = 818; [200, 190] and [20, 15] cost 18 + 400 + 18 + 40 = 476;
    # [200], [190], [20, 15]: 18 + 200 + 18 + 190 + 18 + 40 = 484; four passes: 4 x 18 + 425 = 497.
    assert prefill_chunks([200, 15, 190, 20], fixed=18) == [[0, 2], [3, 1]]
    # Equal lengths waste nothing in one pass.
    assert prefill_chunks([10] * 5, fixed=18) == [[0, 1, 2, 3, 4]]
    assert prefill_chunks([], fixed=18) == []


def test_prefill_grouping_is_the_cheapest_of_all_groupings():
    rng = random.Random(0)
    for _ in range(40):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 7))]
        fixed = rng.choice([0, 18, 100, 512])
        chunks = prefill_chunks(lengths, fixed)
        assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
        cheapest = min(cost(p, lengths, fixed) for p in partitions(list(range(len(lengths)))))
        assert cost(chunks, lengths, fixed) == cheapest


def test_draft_width_maximises_expected_tokens_per_cost():
    # One row, 8 draft tokens offered, each confirmed with chance 1/2, fixed cost 18: width k yields
    # 1 + (1/2 + ... + 1/2^k) tokens for 19 + k: k=0 1/19 = .0526, k=2 1.75/21 = .0833, k=3 1.875/22 = .0852,
    # k=4 1.9375/23 = .0842.
    assert draft_width([8], [0.5], fixed=18) == 3
    # The same row offering 2 tokens: k=2 is the most it can use.
    assert draft_width([2], [0.5], fixed=18) == 2
    # 32 rows whose drafts are never confirmed: drafting only adds cost.
    assert draft_width([8] * 32, [0.0] * 32, fixed=18) == 0
    # No drafts offered, or no rows.
    assert draft_width([0, 0], [0.9, 0.9], fixed=18) == 0
    assert draft_width([], [], fixed=18) == 0
