"""How sure a figure is: standard errors of an aggregate, and paired tests of two runs' difference.

Every function works on a metric's per-document sufficient statistics (``Metric.stats``), so resampling a
corpus metric (BLEU, perplexity) re-aggregates its statistics exactly instead of averaging per-document scores.

On few documents the bootstrap cannot resolve: one document resamples to itself every time (p 0, an interval of
width 0). There the exact paired permutation test decides: under "the runs are exchangeable", each document's
statistics could as well belong to either run, so all ``2**m`` ways of swapping the ``m`` documents whose
statistics differ are equally likely (documents with equal statistics change nothing when swapped). For a mean
metric a swap flips the sign of that document's difference (the sign-flip test); a corpus metric is re-aggregated
from the swapped statistics. Enumerated exactly up to :data:`EXACT_MAX_DIFFERING` documents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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


# Up to this many documents whose statistics differ, the permutation test enumerates every swap: 2**12 = 4,096
# aggregates per run, about half a second for BLEU or chrF on a loaded 2-core machine (each more document doubles
# it: 16 took 6 to 11 s). Beyond it the smallest p it could give, below 1/2**12 = 0.00024, is finer than the
# bootstrap resolves at its default 1000 resamples and than any alpha in use, so the bootstrap decides no worse.
EXACT_MAX_DIFFERING = 12


@dataclass(frozen=True)
class PermutationTest:
    """The exact one-sided paired permutation test of "the candidate is worse".

    ``p_value`` is the share of the ``2**differing`` swaps whose delta (candidate − baseline, in the metric's
    good direction) is at most the observed one; ``smallest_p`` the share at most the lowest delta of all, the
    smallest p-value any outcome on these documents could give (``1 / 2**differing`` when no two swaps tie).
    """

    p_value: float
    smallest_p: float
    differing: int


def differing_documents(baseline: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Positions of the documents whose statistics differ between the runs (NaN is not equal to NaN)."""
    return np.flatnonzero((baseline != candidate).any(axis=1))


def swap_patterns(count: int) -> np.ndarray:
    """Every way of swapping ``count`` documents between the runs: ``[2**count, count]`` booleans, row 0 none."""
    return ((np.arange(2**count)[:, np.newaxis] >> np.arange(count)) & 1).astype(bool)


def paired_permutation(
    aggregate: Aggregate, baseline: np.ndarray, candidate: np.ndarray, *, sign: float = 1.0
) -> PermutationTest:
    """The exact permutation test of ``sign`` * (candidate − baseline) over every swap of the differing documents;
    at most :data:`EXACT_MAX_DIFFERING` of them."""
    changed = differing_documents(baseline, candidate)
    if len(changed) > EXACT_MAX_DIFFERING:
        raise ValueError(f"{len(changed)} differing documents: enumerate at most {EXACT_MAX_DIFFERING}")
    patterns = swap_patterns(len(changed))
    deltas = np.empty(len(patterns))
    for index, swapped in enumerate(patterns):
        rows = changed[swapped]
        base, cand = baseline.copy(), candidate.copy()
        base[rows], cand[rows] = candidate[rows], baseline[rows]
        deltas[index] = sign * (aggregate(cand) - aggregate(base))
    # Swaps that tie analytically may differ in the last bits of a float sum: they count as ties.
    tolerance = 1e-9 * max(1.0, float(np.abs(deltas).max()))
    return PermutationTest(
        p_value=float((deltas <= deltas[0] + tolerance).mean()),
        smallest_p=float((deltas <= deltas.min() + tolerance).mean()),
        differing=len(changed),
    )
