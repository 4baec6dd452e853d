"""Standard error of a metric's aggregate: analytic for mean metrics, bootstrap for corpus metrics."""

from __future__ import annotations

import math

import numpy as np

from llamabench.metrics.base import Metric


def standard_error(metric: Metric, stats: np.ndarray, *, iters: int = 1000, seed: int = 0) -> float:
    """Standard error of ``metric.aggregate(stats)``.

    nan when n < 2, and for corpus metrics when ``iters`` < 2 (bootstrap switched off). Mean metrics:
    sample standard deviation (ddof=1) over sqrt(n). Corpus metrics: standard deviation (ddof=1) of the
    aggregate over ``iters`` seeded bootstrap resamples of the rows; a resample is passed to ``aggregate``
    as the single row of its summed statistics, which is exact for corpus metrics built on sufficient
    statistics (BLEU, chrF, perplexity).
    """
    n = len(stats)
    if n < 2:
        return math.nan
    if metric.is_mean:
        return float(np.std(stats[:, 0], ddof=1) / math.sqrt(n))
    if iters < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(iters)
    for i in range(iters):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n)
        values[i] = metric.aggregate((weights @ stats)[np.newaxis, :])
    return float(np.std(values, ddof=1))
