"""What every engine scores: a token sequence with its scored tail (``ScoreItem``), lm-eval's rolling windows
over a long text, and the totals that add a rolling request's windows up as batches finish."""

from __future__ import annotations

from dataclasses import dataclass

from llamabench.backends.base import OnDone


@dataclass(frozen=True)
class ScoreItem:
    """A token sequence whose last ``n_target`` tokens are scored, each given all tokens before it."""

    tokens: list[int]
    n_target: int


def rolling_windows(tokens: list[int], prefix: int, max_length: int, stride: int | None) -> list[ScoreItem]:
    """lm-eval's rolling windows: each window predicts up to ``stride`` new tokens (default: a full window)
    conditioned on as many preceding tokens as fit in ``max_length``; the first is conditioned on ``prefix``."""
    step = min(stride or max_length, max_length)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [ScoreItem([prefix] + tokens[:first], first)]
    predicted = first
    while predicted < len(tokens):
        n_new = min(len(tokens) - predicted, step)
        end = predicted + n_new
        windows.append(ScoreItem(tokens[max(0, end - max_length - 1) : end], n_new))
        predicted = end
    return windows


class RollingTotals:
    """Collects perplexity window scores as batches finish; a request is done, and reported, with its last window.
    Each total sums its windows in text order, so it does not depend on how the windows were batched."""

    def __init__(self, windows_per_request: list[list[ScoreItem]], on_done: OnDone | None):
        self.windows: list[range] = []  # each request's span of the flat window list
        start = 0
        for windows in windows_per_request:
            self.windows.append(range(start, start + len(windows)))
            start += len(windows)
        self.owner = [request for request, span in enumerate(self.windows) for _ in span]
        self.n_scored = [sum(w.n_target for w in windows) for windows in windows_per_request]
        self.scores: list[float] = [0.0] * start
        self.left = [len(span) for span in self.windows]
        self.on_done = on_done
        self._report([request for request, n in enumerate(self.left) if n == 0])  # empty texts wait for nothing

    def add(self, windows: list[int], scores: list[tuple[float, bool]]) -> None:
        done = []
        for window, (logprob, _) in zip(windows, scores, strict=True):
            self.scores[window] = logprob
            request = self.owner[window]
            self.left[request] -= 1
            if self.left[request] == 0:
                done.append(request)
        self._report(done)

    def result(self, request: int) -> tuple[float, int]:
        return sum(self.scores[w] for w in self.windows[request]), self.n_scored[request]

    def _report(self, requests: list[int]) -> None:
        if self.on_done is not None and requests:
            self.on_done(requests, [self.result(r) for r in requests])
