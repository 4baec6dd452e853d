"""The metric abstraction: per-sample statistics plus an aggregate over their rows.

Every metric turns a list of :class:`Outcome` into a statistics matrix ``[n_samples, k]``
and aggregates any subset of its rows into one number. Mean metrics use ``k = 1`` and
``aggregate = mean``; corpus metrics (BLEU, chrF, perplexity) keep sufficient statistics
so that bootstrap resampling, paired tests and per-sample values all reuse one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Outcome:
    """What the model produced for one document, with the document's targets."""

    doc_id: str
    targets: list[str] = field(default_factory=list)
    prediction: str | None = None
    loglikelihood: float | None = None
    n_tokens: int | None = None
    units_text: str | None = None
    word_rule: str = "lm_eval"  # how word_perplexity counts the words of units_text (metrics.perplexity.WORD_RULES)
    choice_loglikelihoods: list[float] | None = None
    choices: list[str] | None = None
    label: int | None = None


StatsFn = Callable[[Sequence[Outcome]], np.ndarray]
AggregateFn = Callable[[np.ndarray], float]


def mean_aggregate(stats: np.ndarray) -> float:
    return float(stats[:, 0].mean())


@dataclass(frozen=True)
class Metric:
    """A named metric: ``stats`` maps outcomes to a ``[n, k]`` matrix, ``aggregate`` maps rows to a value."""

    name: str
    higher_is_better: bool
    stats: StatsFn
    aggregate: AggregateFn = mean_aggregate
    is_mean: bool = True
    signature: str | None = None
    # Bumped whenever a change to the metric's definition changes a number: runs scored by different versions
    # of a metric are not compared (see ``comparability.py``).
    version: str = "1"
    # The task kinds whose outcomes this metric can score (generated text, choice log-likelihoods, ...).
    kinds: tuple[str, ...] = ()
    # Counted in the model's tokens: comparable only between runs that share a tokenizer.
    tokenizer_dependent: bool = False

    def per_sample(self, stats: np.ndarray) -> np.ndarray:
        """The metric computed on each sample alone (sentence BLEU, document perplexity, ...)."""
        if self.is_mean:
            return stats[:, 0].astype(float)
        return np.array([self.aggregate(stats[i : i + 1]) for i in range(len(stats))])
