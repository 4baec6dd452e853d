"""The metric contract: per-document sufficient statistics, and one number aggregated from any subset of them.

A metric is one class. ``stats`` turns the outcomes of a task into a ``[n_documents, k]`` matrix;
``aggregate`` turns any subset of its rows into the figure. Everything else follows from those two and from
the metric's type: the per-document values, the standard error, the paired test that ``check`` runs, and the
signature that keeps figures computed under other settings apart. Two types cover the built-in metrics:

- :class:`MeanMetric`: a score per document, averaged (SQuAD F1, ROUGE). Its statistics are the scores
  (``k = 1``); its standard error is analytic; ``check`` tests it with the exact sign-flip permutation test when
  at most 12 documents differ between the runs, else with a paired bootstrap.
  :class:`BinaryMetric` is a mean metric whose scores are right or wrong (accuracy, exact match): ``check``
  tests it with the exact McNemar test.
- :class:`CorpusMetric`: a figure computed from summed statistics (BLEU from n-gram counts, perplexity from
  log-likelihoods and word counts). Resampling sums resampled rows, so bootstrap errors and paired tests are
  exact, as in sacrebleu; on at most 12 differing documents ``check`` swaps them between the runs instead
  (the exact permutation test).

Worked example, a new metric in one file of ``llamabench/metrics/`` (it registers itself by its ``name``, and a
task YAML may then list it under ``metrics:``)::

    class LongAnswer(BinaryMetric):
        "Whether the prediction has more than ten words."

        name = "long_answer"
        higher_is_better = True
        scale = "0-1"
        needs = ("prediction",)

        def score(self, outcome: Outcome) -> float:
            return float(len((outcome.prediction or "").split()) > 10)

For three predictions of 12, 3 and 20 words, ``stats`` is ``[[1], [0], [1]]``, ``aggregate`` 0.6667,
``per_sample`` ``[1, 0, 1]`` and ``standard_error`` sqrt(1/3) / sqrt(3) = 0.3333.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.uncertainty import (
    EXACT_MAX_DIFFERING,
    bootstrap_standard_error,
    differing_documents,
    mcnemar_p,
    mean_standard_error,
    paired_permutation,
)


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
    # Tokens the backend dropped from this document's requests to fit its window; None: the backend cannot tell.
    truncated_tokens: int | None = None


@dataclass(frozen=True)
class PairedTest:
    """A one-sided paired test that the candidate is worse: its ``name`` ("permutation", "bootstrap" or
    "mcnemar"), ``p_value``, the ``smallest_p`` any outcome on these documents could give it (0: no bound below),
    and the number of documents whose statistics differ between the runs."""

    name: str
    p_value: float
    smallest_p: float
    differing: int


# Every concrete metric class, instantiated once, by name: filled as the classes are defined.
REGISTRY: dict[str, Metric] = {}
# What a metric class must set (its type, MeanMetric, BinaryMetric or CorpusMetric, supplies the rest).
REQUIRED_ATTRIBUTES = ("name", "higher_is_better", "scale", "needs")


class Metric(ABC):
    """A named metric: ``stats`` per document, ``aggregate`` over any subset of documents (see the module)."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    # What the figure means, for readers of tables: "0-1", "0-100", "perplexity (>= 1)", ...
    scale: ClassVar[str]
    # The ``Outcome`` fields this metric reads (``prediction``, ``choice_loglikelihoods``, ...): a task may list
    # it only if its kind's outcomes fill them all (``TaskKind.outcome_fields``), checked when the task is parsed.
    needs: ClassVar[tuple[str, ...]]
    # How ``check`` tests a paired difference on many documents: "bootstrap" or "mcnemar" (see ``paired_test_of``).
    paired_test: ClassVar[str] = "bootstrap"
    # Bumped whenever a change to the metric's definition changes a number: runs scored by different versions
    # of a metric are not compared (see ``comparability.py``).
    version: ClassVar[str] = "1"
    # Counted in the model's tokens: comparable only between runs that share a tokenizer.
    tokenizer_dependent: ClassVar[bool] = False
    # Whether ``standard_error`` draws seeded resamples, so that the run's --seed changes it.
    seeded_standard_error: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or "name" not in cls.__dict__:
            return
        missing = [attribute for attribute in REQUIRED_ATTRIBUTES if not hasattr(cls, attribute)]
        if missing:
            raise LlamabenchError(
                f"metric class {cls.__qualname__} ('{cls.name}') lacks the required attribute(s) "
                f"{', '.join(repr(a) for a in missing)}; every metric sets {', '.join(REQUIRED_ATTRIBUTES)} "
                "(see docs/metrics.md)"
            )
        if cls.name in REGISTRY:
            raise LlamabenchError(
                f"metric name '{cls.name}' of {cls.__qualname__} is taken by {type(REGISTRY[cls.name]).__qualname__}; "
                "give the metric another name"
            )
        REGISTRY[cls.name] = cls()

    @abstractmethod
    def stats(self, outcomes: Sequence[Outcome]) -> np.ndarray:
        """The ``[n, k]`` sufficient statistics of each outcome, in order."""

    @abstractmethod
    def aggregate(self, rows: np.ndarray) -> float:
        """The figure for the documents whose statistics are ``rows``."""

    @abstractmethod
    def per_sample(self, stats: np.ndarray) -> np.ndarray:
        """The metric computed on each document alone (sentence BLEU, document perplexity, ...)."""

    @abstractmethod
    def standard_error(self, stats: np.ndarray, *, iters: int = 1000, seed: int = 0) -> float:
        """Standard error of ``aggregate(stats)``; nan when it cannot be estimated."""

    def signature(self, outcomes: Sequence[Outcome]) -> str | None:
        """What, besides the data, the figure depends on (sacrebleu's signature, a word rule); None if nothing."""
        return None

    def paired_test_of(self, baseline: np.ndarray, candidate: np.ndarray, deltas: np.ndarray) -> PairedTest:
        """The one-sided test that the candidate is worse, given both runs' aligned statistics and the bootstrap
        ``deltas`` of candidate − baseline in the metric's good direction: the exact permutation test when at most
        ``EXACT_MAX_DIFFERING`` documents differ, else the share of bootstrap deltas >= 0."""
        differing = len(differing_documents(baseline, candidate))
        if differing > EXACT_MAX_DIFFERING:
            return PairedTest(self.paired_test, float((deltas >= 0).mean()), 0.0, differing)
        sign = 1.0 if self.higher_is_better else -1.0
        exact = paired_permutation(self.aggregate, baseline, candidate, sign=sign)
        return PairedTest("permutation", exact.p_value, exact.smallest_p, exact.differing)


class MeanMetric(Metric, ABC):
    """A score per document; the figure is their mean."""

    @abstractmethod
    def score(self, outcome: Outcome) -> float:
        """This document's score."""

    def stats(self, outcomes: Sequence[Outcome]) -> np.ndarray:
        return np.array([self.score(outcome) for outcome in outcomes], dtype=float).reshape(-1, 1)

    def aggregate(self, rows: np.ndarray) -> float:
        return float(rows[:, 0].mean())

    def per_sample(self, stats: np.ndarray) -> np.ndarray:
        return stats[:, 0].astype(float)

    def standard_error(self, stats: np.ndarray, *, iters: int = 1000, seed: int = 0) -> float:
        return mean_standard_error(stats[:, 0])


class BinaryMetric(MeanMetric, ABC):
    """A mean metric whose scores are right or wrong (any two values, e.g. 0 and 100): McNemar's test."""

    paired_test = "mcnemar"

    def paired_test_of(self, baseline: np.ndarray, candidate: np.ndarray, deltas: np.ndarray) -> PairedTest:
        """The exact McNemar test, on any number of documents; the smallest p it can give is that of every
        discordant document going the candidate's worse way, 1 / 2**discordant."""
        sign = 1.0 if self.higher_is_better else -1.0
        per_document = sign * (candidate[:, 0] - baseline[:, 0])
        worse, better = int((per_document < 0).sum()), int((per_document > 0).sum())
        return PairedTest(self.paired_test, mcnemar_p(worse, better), mcnemar_p(worse + better, 0), worse + better)


class CorpusMetric(Metric, ABC):
    """A figure computed from statistics summed over documents."""

    seeded_standard_error = True

    @abstractmethod
    def score_from(self, totals: np.ndarray) -> float:
        """The figure from the column sums of the statistics."""

    def aggregate(self, rows: np.ndarray) -> float:
        return self.score_from(rows.sum(axis=0))

    def per_sample(self, stats: np.ndarray) -> np.ndarray:
        return np.array([self.score_from(row) for row in stats], dtype=float)

    def standard_error(self, stats: np.ndarray, *, iters: int = 1000, seed: int = 0) -> float:
        return bootstrap_standard_error(self.aggregate, stats, iters=iters, seed=seed)
