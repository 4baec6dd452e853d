"""Rolling-loglikelihood metrics as lm-eval 0.4 defines them (all lower is better).

Stats rows are ``[loglikelihood, units]``, where units are the words, UTF-8 bytes or tokens of the
document; the aggregate over rows is ``exp(-sum(ll) / sum(units))`` (``bits_per_byte``:
``-sum(ll) / sum(bytes) / ln 2``). Words and bytes are counted on ``Outcome.units_text``, the original
document text; words by the task's ``word_rule`` (``Outcome.word_rule``), one of :data:`WORD_RULES`.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import CorpusMetric, Outcome


def lm_eval_words(text: str) -> int:
    """Words as lm-eval counts them: ``len(re.split(r"\\s+", text))``, which counts an empty word at each end
    of a text that starts or ends with whitespace."""
    return len(re.split(r"\s+", text))


def whitespace_tokens(text: str) -> int:
    """Runs of non-whitespace characters: ``len(text.split())``, no empty words."""
    return len(text.split())


WORD_RULES: dict[str, Callable[[str], int]] = {"lm_eval": lm_eval_words, "whitespace_tokens": whitespace_tokens}


def word_rule_signature(rule: str) -> str:
    """The ``signature`` of a word_perplexity row (``words:lm_eval``): figures under other rules never pass for it."""
    return f"words:{rule}"


def count_words(outcome: Outcome) -> int:
    """Words of the document text by the outcome's word rule."""
    return WORD_RULES[outcome.word_rule](_units_text(outcome))


def count_bytes(outcome: Outcome) -> int:
    """UTF-8 bytes of the original document text."""
    return len(_units_text(outcome).encode("utf-8"))


def count_tokens(outcome: Outcome) -> int:
    """Tokens the model scored (``Outcome.n_tokens``)."""
    if outcome.n_tokens is None:
        raise LlamabenchError(f"document '{outcome.doc_id}' has no token count; the backend must report n_tokens")
    return outcome.n_tokens


def _units_text(outcome: Outcome) -> str:
    if outcome.units_text is None:
        raise LlamabenchError(f"document '{outcome.doc_id}' has no units_text to count words/bytes on")
    return outcome.units_text


_MAX_EXPONENT = math.log(np.finfo(np.float64).max)


class LoglikelihoodMetric(CorpusMetric):
    """A rolling log-likelihood figure: statistics ``[loglikelihood, units]`` per document."""

    higher_is_better = False
    needs = ("loglikelihood", "units_text")  # words or bytes of the original text

    @abstractmethod
    def count_units(self, outcome: Outcome) -> int:
        """The document's units (words, bytes or tokens)."""

    def stats(self, outcomes: Sequence[Outcome]) -> np.ndarray:
        rows = []
        for outcome in outcomes:
            if outcome.loglikelihood is None:
                raise LlamabenchError(f"{self.name}: document '{outcome.doc_id}' has no loglikelihood")
            rows.append((outcome.loglikelihood, self.count_units(outcome)))
        return np.array(rows, dtype=float).reshape(-1, 2)


class Perplexity(LoglikelihoodMetric, ABC):
    """exp(-sum(loglikelihood) / sum(units))."""

    scale = "perplexity (>= 1)"

    def score_from(self, totals: np.ndarray) -> float:
        loglikelihood, units = totals
        exponent = float(-loglikelihood / units)
        if math.isnan(exponent):  # a NaN compares false with everything: without this it would print as inf
            return math.nan
        return math.exp(exponent) if exponent < _MAX_EXPONENT else math.inf  # a hopeless model, not a crash


class WordPerplexity(Perplexity):
    """Perplexity per word of the original text, words counted by the task's word rule."""

    name = "word_perplexity"
    needs = ("loglikelihood", "units_text", "word_rule")

    def count_units(self, outcome: Outcome) -> int:
        return count_words(outcome)

    def signature(self, outcomes: Sequence[Outcome]) -> str | None:
        rules = {outcome.word_rule for outcome in outcomes}
        return word_rule_signature(rules.pop()) if len(rules) == 1 else None


class BytePerplexity(Perplexity):
    """Perplexity per UTF-8 byte of the original text."""

    name = "byte_perplexity"

    def count_units(self, outcome: Outcome) -> int:
        return count_bytes(outcome)


class TokenPerplexity(Perplexity):
    """Perplexity per token the model scored: comparable only between runs with one tokenizer."""

    name = "token_perplexity"
    needs = ("loglikelihood", "n_tokens")
    tokenizer_dependent = True

    def count_units(self, outcome: Outcome) -> int:
        return count_tokens(outcome)


class BitsPerByte(LoglikelihoodMetric):
    """-sum(loglikelihood) / sum(bytes) / ln 2."""

    name = "bits_per_byte"
    scale = "bits (>= 0)"

    def count_units(self, outcome: Outcome) -> int:
        return count_bytes(outcome)

    def score_from(self, totals: np.ndarray) -> float:
        loglikelihood, units = totals
        return float(-loglikelihood / units / math.log(2))
