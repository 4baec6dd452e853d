"""Multiple-choice accuracy from per-choice loglikelihoods, as lm-eval scores it (0–1 scale).

A document with a non-finite choice log-likelihood scores NaN, never right or wrong (see ``backends/finite.py``).
"""

from __future__ import annotations

import math

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import BinaryMetric, Outcome


class Accuracy(BinaryMetric):
    """Whether the highest-scoring choice is the labelled one (lm-eval's ``acc``)."""

    name = "acc"
    higher_is_better = True
    scale = "0-1"
    needs = ("choice_loglikelihoods", "label")

    def choice_scores(self, outcome: Outcome) -> np.ndarray:
        """What the choices are ranked by: their log-likelihoods."""
        return np.asarray(outcome.choice_loglikelihoods, dtype=float)

    def score(self, outcome: Outcome) -> float:
        if not outcome.choice_loglikelihoods or outcome.label is None:
            raise LlamabenchError(f"{self.name}: document '{outcome.doc_id}' needs choice_loglikelihoods and a label")
        scores = self.choice_scores(outcome)
        if not np.isfinite(scores).all():
            # argmax over a NaN names that choice: no answer was chosen, so there is no score either.
            return math.nan
        return float(int(np.argmax(scores)) == outcome.label)


class NormalisedAccuracy(Accuracy):
    """Accuracy with choices ranked by log-likelihood per character (lm-eval's ``acc_norm``)."""

    name = "acc_norm"
    needs = ("choice_loglikelihoods", "choices", "label")

    def choice_scores(self, outcome: Outcome) -> np.ndarray:
        if outcome.choices is None or len(outcome.choices) != len(outcome.choice_loglikelihoods or []):
            raise LlamabenchError(f"acc_norm: document '{outcome.doc_id}' needs one choice string per loglikelihood")
        return super().choice_scores(outcome) / np.array([len(choice) for choice in outcome.choices], dtype=float)
