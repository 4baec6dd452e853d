"""SQuAD v1.1 exact match and token F1, following the official ``evaluate-v1.1.py`` behaviour."""

from __future__ import annotations

import re
import string
from abc import abstractmethod
from collections import Counter

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import BinaryMetric, MeanMetric, Outcome

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


class SquadMetric(MeanMetric):
    """Best score over the gold answers, in percent; an unanswered question scores 0, as in the official script."""

    higher_is_better = True
    scale = "0-100"
    needs = ("prediction", "targets")

    @abstractmethod
    def against(self, prediction: str, gold: str) -> float:
        """The prediction's score against one gold answer, 0-1."""

    def score(self, outcome: Outcome) -> float:
        if not outcome.targets:
            raise LlamabenchError(f"{self.name}: document '{outcome.doc_id}' has no gold answers")
        if outcome.prediction is None:
            return 0.0
        return 100.0 * max(self.against(outcome.prediction, gold) for gold in outcome.targets)


class ExactMatch(SquadMetric, BinaryMetric):
    """Whether the normalised prediction equals a normalised gold answer."""

    name = "exact_match"

    def against(self, prediction: str, gold: str) -> float:
        return exact_match_score(prediction, gold)


class F1(SquadMetric):
    """Bag-of-tokens F1 against the best gold answer."""

    name = "f1"

    def against(self, prediction: str, gold: str) -> float:
        return f1_score(prediction, gold)
