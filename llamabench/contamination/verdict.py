"""The LLaMA 2 paper's test of whether contamination helped (appendix A.6, Table 51), per subset and length.

For a subset of ``n`` documents with mean metric X̄, the paper compares X̄ with the sampling distribution of the
mean of ``n`` documents drawn from the whole benchmark: ``Z_n = (X̄ - µ_n) / σ_n``, where ``µ_n`` is the
benchmark's mean and ``σ_n = σ / √n`` with ``σ`` the benchmark's standard deviation over documents
(``np.std``, dividing by the number of documents). For right/wrong scores (accuracy) ``σ = √(p(1 - p))``, so
``σ_n = √(p(1 - p) / n)`` with ``p`` the benchmark's accuracy, and no finite-population correction: this is what
reproduces Table 51 (HellaSwag 70B, clean: n 7391, X̄ 80.0, µ 82.5 give -5.66 against the printed -5.73, the gap
being the rounding of the printed inputs). The same formula serves any other mean of per-document scores (F1,
ROUGE). A corpus metric (BLEU, perplexity) is no mean of document scores: there ``µ_n`` and ``σ_n`` are the mean and
standard deviation of the metric over seeded random subsets of size ``n`` (see ``analysis/subsets.py``).

The verdict: contamination is claimed for a task, metric and minimum length only when all four subsets have
``|Z_n| > 2`` and the clean subset scores worse than the mean while the dirty one scores better (for a metric
where higher is better: ``Z_clean < 0 < Z_dirty``; the other way round for perplexity). Of the lengths so
claimed, the paper reports the largest ("the largest L that benefits").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llamabench.contamination.criterion import SUBSETS

Z_THRESHOLD = 2.0


@dataclass(frozen=True)
class SubsetTest:
    """One subset's figures: its size, mean metric X̄, the sampling distribution's µ_n and σ_n, and Z_n."""

    n: int
    mean: float
    mu_n: float
    sigma_n: float

    @property
    def z(self) -> float:
        if self.n == 0 or not self.sigma_n > 0:
            return math.nan
        return (self.mean - self.mu_n) / self.sigma_n


def mean_test(scores: np.ndarray, chosen: np.ndarray) -> SubsetTest:
    """The test of the documents ``chosen`` (a mask) among the per-document ``scores`` of the whole benchmark."""
    scores = np.asarray(scores, dtype=float)
    n = int(np.count_nonzero(chosen))
    mean = float(scores[chosen].mean()) if n else math.nan
    return SubsetTest(n, mean, float(scores.mean()), sampling_sigma(float(scores.std()), n))


def sampling_sigma(sigma: float, n: int) -> float:
    """σ_n = σ / √n, without a finite-population correction (as the paper); NaN for an empty subset."""
    return sigma / math.sqrt(n) if n else math.nan


def binary_sigma(p: float) -> float:
    """σ of right/wrong scores with accuracy ``p`` (0-1): √(p(1 - p))."""
    return math.sqrt(p * (1 - p))


def contaminated(z: dict[str, float], higher_is_better: bool = True) -> bool:
    """The paper's verdict from the Z_n of the four subsets (see the module)."""
    values = [z[subset] for subset in SUBSETS]
    if any(math.isnan(value) or abs(value) <= Z_THRESHOLD for value in values):
        return False
    sign = 1.0 if higher_is_better else -1.0
    return sign * z["clean"] < 0 < sign * z["dirty"]


def largest_benefiting(verdicts: dict[int, bool]) -> int | None:
    """The largest minimum length whose verdict is contaminated (None: none is)."""
    claimed = [length for length, verdict in verdicts.items() if verdict]
    return max(claimed) if claimed else None
