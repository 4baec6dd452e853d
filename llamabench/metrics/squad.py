"""SQuAD v1.1 exact match and token F1, following the official ``evaluate-v1.1.py`` behaviour."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import Metric, Outcome

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, delete ASCII punctuation, drop the words a/an/the and collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 between the normalised prediction and gold answer (0.0 without common tokens)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _squad_metric(name: str, score: Callable[[str, str], float]) -> Metric:
    def stats(outcomes: Sequence[Outcome]) -> np.ndarray:
        values = []
        for outcome in outcomes:
            if not outcome.targets:
                raise LlamabenchError(f"{name}: document '{outcome.doc_id}' has no gold answers")
            if outcome.prediction is None:  # unanswered: 0, as in the official script
                values.append(0.0)
            else:
                values.append(100.0 * max(score(outcome.prediction, gold) for gold in outcome.targets))
        return np.array(values, dtype=float).reshape(-1, 1)

    return Metric(name=name, higher_is_better=True, stats=stats, kinds=("generate",))


exact_match = _squad_metric("exact_match", exact_match_score)
f1 = _squad_metric("f1", f1_score)

METRICS = [exact_match, f1]
