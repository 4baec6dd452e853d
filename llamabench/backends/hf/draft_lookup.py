"""Draft tokens for a greedy row, copied from its own prompt and output (prompt-lookup decoding).

A model often continues by copying: an extractive answer repeats a span of its context, a degenerate
translation repeats its own last phrase until the token limit. When the row's last n tokens (n = 3, 2, 1,
longest first) occurred before, the tokens that followed that occurrence are a cheap guess of what comes next.
The engine checks the guesses in its next forward pass and keeps only the ones the model itself would have
chosen, so drafts change how many passes a row takes, never its text.

Worked example: the row's text so far is the tokens [the, value, of, the, value, of]. Its last three, (the,
value, of), also end at position 2, and positions 3, 4, 5 follow: the draft of four tokens is [the, value, of,
the], the copy running on into its own guesses once it reaches the end of the text.
"""

from __future__ import annotations

from collections.abc import Sequence

LONGEST_NGRAM = 3
DRAFT_LIMIT = 8  # the most draft tokens one row offers a pass


class DraftLookup:
    """One row's text, indexed by every n-gram's latest end position, and how often its drafts were accepted."""

    def __init__(self, prompt: Sequence[int]):
        self.tokens: list[int] = []
        self._latest: dict[tuple[int, ...], int] = {}  # n-gram -> end position of its latest occurrence
        self.accepted = 0  # draft tokens the model confirmed
        self.rejected = 0  # drafts cut short by the model's own choice
        self.extend(prompt)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens``; n-grams ending before the last token are indexed (the last one is the query)."""
        start = len(self.tokens)
        self.tokens.extend(tokens)
        for end in range(max(start - 1, 0), len(self.tokens) - 1):
            for n in range(1, min(LONGEST_NGRAM, end + 1) + 1):
                self._latest[tuple(self.tokens[end - n + 1 : end + 1])] = end

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest matching suffix."""
        for n in range(min(LONGEST_NGRAM, len(self.tokens)), 0, -1):
            end = self._latest.get(tuple(self.tokens[-n:]))
            if end is not None:
                guess: list[int] = []
                past = len(self.tokens)
                for position in range(end + 1, end + 1 + limit):
                    guess.append(self.tokens[position] if position < past else guess[position - past])
                return guess
        return []

    def record(self, offered: int, accepted: int) -> None:
        """A pass checked ``offered`` draft tokens and the model confirmed the first ``accepted``."""
        self.accepted += accepted
        self.rejected += accepted < offered

    @property
    def acceptance(self) -> float:
        """Estimated chance that the next draft token is confirmed given the previous ones were (each token
        checked is a trial until the first miss; one success and one failure assumed before any evidence)."""
        return (self.accepted + 1) / (self.accepted + self.rejected + 2)
