"""ROUGE-1/2/L/Lsum F-measure through Google's ``rouge-score`` (stemming on, 0–1 scale).

``rougeLsum`` needs newline-separated sentences: targets are used as given, and a prediction without
newlines is split after ``.``, ``!`` or ``?`` followed by whitespace. With several targets each type takes
the best-scoring one (``RougeScorer.score_multi``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from rouge_score.rouge_scorer import RougeScorer

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import MeanMetric, Outcome

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SCORER = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> str:
    """Put each sentence on its own line (split after ``.``/``!``/``?`` + whitespace) unless lines exist."""
    if "\n" in text:
        return text
    return "\n".join(_SENTENCE_END.split(text.strip()))


@lru_cache(maxsize=2**16)
def rouge_scores(prediction: str, targets: tuple[str, ...]) -> dict[str, float]:
    """F-measure of every ROUGE type for one prediction against its best target, computed once and cached."""
    # Newlines are whitespace to the tokenizer, so only rougeLsum sees the sentence split.
    scores = _SCORER.score_multi(list(targets), split_sentences(prediction))
    return {rouge_type: scores[rouge_type].fmeasure for rouge_type in ROUGE_TYPES}


class Rouge(MeanMetric):
    """ROUGE F-measure of one type against the best reference."""

    higher_is_better = True
    scale = "0-1"
    needs = ("prediction", "targets")

    def score(self, outcome: Outcome) -> float:
        if not outcome.targets:
            raise LlamabenchError(f"{self.name}: document '{outcome.doc_id}' has no reference summary")
        return rouge_scores(outcome.prediction or "", tuple(outcome.targets))[self.name]


class Rouge1(Rouge):
    """Unigram overlap."""

    name = "rouge1"


class Rouge2(Rouge):
    """Bigram overlap."""

    name = "rouge2"


class RougeL(Rouge):
    """Longest common subsequence over the whole text."""

    name = "rougeL"


class RougeLsum(Rouge):
    """Longest common subsequence summed over sentences (one per line)."""

    name = "rougeLsum"
