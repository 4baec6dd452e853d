"""The prefix store and the grouping of prompts by shared prefix, by hand."""

import torch

from llamabench.backends.hf.prompt_prefixes import PromptPrefixes, common_prefix_groups, shared_prefix_length


def kv(n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [torch.zeros(1, 1, n, 2)], [torch.zeros(1, 1, n, 2)]


def test_shared_prefix_length():
    assert shared_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert shared_prefix_length([1, 2], [1, 2, 3]) == 2
    assert shared_prefix_length([5], [1]) == 0


def test_groups_are_prefixes_two_or_more_prompts_share():
    a = [1, 2, 3, 4, 9]
    b = [1, 2, 3, 4, 8, 7]
    c = [1, 2, 3, 5]
    d = [6, 6, 6, 6]
    # With a minimum of 3 shared tokens: a, b and c share [1, 2, 3]; d shares nothing.
    assert common_prefix_groups([a, d, b, c], min_shared=3) == [(1, 2, 3)]
    # With 4: c drops out, a and b share [1, 2, 3, 4].
    assert common_prefix_groups([a, d, b, c], min_shared=4) == [(1, 2, 3, 4)]
    # A prompt is never its own whole prefix: one token is kept to produce the next token.
    assert common_prefix_groups([[1, 2, 3], [1, 2, 3, 4]], min_shared=2) == [(1, 2)]


def test_match_picks_the_longest_shared_prefix_and_stops_short_of_the_prompt():
    store = PromptPrefixes(max_tokens=100, min_shared=2)
    store.add([1, 2, 3], *kv(3))
    store.add([1, 2, 3, 4, 5], *kv(5))
    match = store.match([1, 2, 3, 4, 6])
    assert match.stored.tokens == (1, 2, 3, 4, 5) and match.length == 4
    assert store.match([1, 2, 3]).length == 2  # the last token must run
    assert store.match([1, 9, 9]).stored is None  # 1 shared token is below the minimum


def test_least_recently_used_prompts_are_evicted_beyond_the_token_limit():
    store = PromptPrefixes(max_tokens=8, min_shared=2)
    store.add([1, 1, 1], *kv(3))
    store.add([2, 2, 2], *kv(3))
    assert store.match([1, 1, 1, 0]).length == 3  # [1, 1, 1] is now the most recently used
    store.add([3, 3, 3], *kv(3))  # 9 tokens > 8: the least recently used, [2, 2, 2], goes
    assert store.match([2, 2, 2, 0]).stored is None
    assert store.match([1, 1, 1, 0]).length == 3 and store.match([3, 3, 3, 0]).length == 3
    store.add([4], *kv(1))  # shorter than min_shared: not worth keeping
    assert store.match([4, 0]).stored is None
