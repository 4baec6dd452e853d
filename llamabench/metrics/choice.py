"""Multiple-choice accuracy from per-choice loglikelihoods, as lm-eval scores it (0–1 scale)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import Metric, Outcome


def _raw_scores(outcome: Outcome) -> np.ndarray:
    return np.asarray(outcome.choice_loglikelihoods, dtype=float)


def _length_normalised_scores(outcome: Outcome) -> np.ndarray:
    """Loglikelihood per character of each choice (lm-eval's ``acc_norm``)."""
    if outcome.choices is None or len(outcome.choices) != len(outcome.choice_loglikelihoods or []):
        raise LlamabenchError(f"acc_norm: document '{outcome.doc_id}' needs one choice string per loglikelihood")
    return _raw_scores(outcome) / np.array([len(choice) for choice in outcome.choices], dtype=float)


def _choice_metric(name: str, scores: Callable[[Outcome], np.ndarray]) -> Metric:
    def stats(outcomes: Sequence[Outcome]) -> np.ndarray:
        values = []
        for outcome in outcomes:
            if not outcome.choice_loglikelihoods or outcome.label is None:
                raise LlamabenchError(f"{name}: document '{outcome.doc_id}' needs choice_loglikelihoods and a label")
            values.append(float(int(np.argmax(scores(outcome))) == outcome.label))
        return np.array(values, dtype=float).reshape(-1, 1)

    return Metric(name=name, higher_is_better=True, stats=stats, kinds=("multiple_choice",))


acc = _choice_metric("acc", _raw_scores)
acc_norm = _choice_metric("acc_norm", _length_normalised_scores)

METRICS = [acc, acc_norm]
