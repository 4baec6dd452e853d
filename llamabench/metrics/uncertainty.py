"""How sure a figure is: standard errors of an aggregate, and paired tests of two runs' difference.

Every function works on a metric's per-document sufficient statistics (``Metric.stats``), so resampling a
corpus metric (BLEU, perplexity) re-aggregates its statistics exactly instead of averaging per-document scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Aggregate = Callable[[np.ndarray], float]


def mean_standard_error(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over sqrt(n); nan when n < 2."""
    n = len(values)
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n >= 2 else math.nan


def bootstrap_standard_error(aggregate: Aggregate, stats: np.ndarray, *, iters: int, seed: int) -> float:
    """Standard deviation (ddof=1) of ``aggregate`` over ``iters`` seeded resamples of the rows of ``stats``.

    A resample is passed to ``aggregate`` as the single row of its summed statistics, which is exact for
    metrics built on sufficient statistics. nan when n < 2 or ``iters`` < 2 (bootstrap switched off).
    """
    n = len(stats)
    if n < 2 or iters < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(iters)
    for i in range(iters):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n)
        values[i] = aggregate((weights @ stats)[np.newaxis, :])
    return float(np.std(values, ddof=1))


def paired_bootstrap(
    aggregate: Aggregate, baseline: np.ndarray, candidate: np.ndarray, *, iters: int, seed: int
) -> np.ndarray:
    """Candidate − baseline aggregate over ``iters`` resamples of the documents, the same rows for both runs."""
    rng = np.random.default_rng(seed)
    n = len(baseline)
    deltas = np.empty(iters)
    for i in range(iters):
        rows = rng.integers(0, n, size=n)
        deltas[i] = aggregate(candidate[rows]) - aggregate(baseline[rows])
    return deltas


def mcnemar_p(worse: int, better: int) -> float:
    """Exact one-sided McNemar p-value that the candidate is worse: P(X >= worse), X ~ Bin(worse + better, 1/2).

    ``worse`` counts documents the baseline got right and the candidate wrong, ``better`` the reverse.
    """
    discordant = worse + better
    return sum(math.comb(discordant, k) for k in range(worse, discordant + 1)) / 2**discordant
