"""Key/value caches of recently prefilled prompts, so that a prompt sharing a long prefix with one of them (SQuAD
questions on one paragraph, one instruction or few-shot block before every document) prefills only the rest.

A prompt's tokens at positions 0..n-1 have the same keys and values in every prompt that begins with those n
tokens (a causal model's position i sees positions <= i only), so reusing them computes what a full prefill would,
up to floating-point summation order. Entries are evicted least recently used first, beyond ``max_tokens`` tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Copying a token's keys and values costs far less than computing them, so even a short shared instruction
# (WMT's "Translate the following German text into English." is 9 tokens) is worth reusing; shorter ones are
# too common by chance to be worth looking for.
MIN_SHARED = 8
NEVER = 2**62  # as ``min_shared``: no prefix is ever shared


@dataclass(frozen=True)
class StoredPrompt:
    """One prompt's tokens and, per layer, its keys and values ``[1, kv_heads, len(tokens), head_dim]``."""

    tokens: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


@dataclass(frozen=True)
class PrefixMatch:
    """The first ``length`` tokens of a prompt are ``stored``'s (``length`` 0: nothing to reuse)."""

    stored: StoredPrompt | None
    length: int


NO_MATCH = PrefixMatch(None, 0)


class PromptPrefixes:
    """The most recently prefilled prompts' caches, up to ``max_tokens`` tokens in all."""

    def __init__(self, max_tokens: int = 4096, min_shared: int = MIN_SHARED):
        self.max_tokens, self.min_shared = max_tokens, min_shared
        self._entries: OrderedDict[tuple[int, ...], StoredPrompt] = OrderedDict()
        self._tokens = 0

    def match(self, prompt: Sequence[int]) -> PrefixMatch:
        """The stored prompt sharing the longest prefix with ``prompt``, if at least ``min_shared`` tokens long.
        The match stops one token short of the whole prompt, whose last token must run to give the next one."""
        best = NO_MATCH
        for entry in self._entries.values():
            length = min(shared_prefix_length(entry.tokens, prompt), len(prompt) - 1)
            if length >= self.min_shared and length > best.length:
                best = PrefixMatch(entry, length)
        if best.stored is not None:
            self._entries.move_to_end(best.stored.tokens)
        return best

    def add(self, tokens: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep a prefilled prompt's cache (worth keeping only if it can be shared: ``min_shared`` tokens or more)."""
        key = tuple(tokens)
        if len(key) < self.min_shared or len(key) > self.max_tokens or key in self._entries:
            return
        self._entries[key] = StoredPrompt(key, keys, values)
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            _, evicted = self._entries.popitem(last=False)
            self._tokens -= len(evicted.tokens)


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def common_prefix_groups(prompts: Sequence[Sequence[int]], min_shared: int = MIN_SHARED) -> list[tuple[int, ...]]:
    """Prefixes of at least ``min_shared`` tokens that two or more of ``prompts`` share (each one token short of
    its shortest member), found by sorting: prompts sharing a prefix sort next to each other."""
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    groups, start = [], 0
    while start < len(order):
        first = prompts[order[start]]
        length, end = len(first) - 1, start + 1
        while end < len(order):
            candidate = prompts[order[end]]
            shared = min(length, shared_prefix_length(first, candidate), len(candidate) - 1)
            if shared < min_shared:
                break
            length, end = shared, end + 1
        if end - start > 1:
            groups.append(tuple(first[:length]))
        start = end
    return groups
