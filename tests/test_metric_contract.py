"""The metric contract: a class registers itself by name, and its type gives its standard error and paired test."""

import math

import numpy as np
import pytest

from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS, BinaryMetric, CorpusMetric, MeanMetric, Outcome, get_metric
from llamabench.metrics.base import REGISTRY


@pytest.fixture
def long_answer():
    """The worked example of metrics/base.py, defined the way a newcomer would, removed again afterwards."""

    class LongAnswer(BinaryMetric):
        name = "long_answer"
        higher_is_better = True
        scale = "0-1"
        needs = ("prediction",)

        def score(self, outcome: Outcome) -> float:
            return float(len((outcome.prediction or "").split()) > 10)

    yield get_metric("long_answer")
    REGISTRY.pop("long_answer")


def test_worked_example_values_by_hand(long_answer):
    outcomes = [Outcome(str(n), prediction=" ".join(["w"] * n)) for n in (12, 3, 20)]
    stats = long_answer.stats(outcomes)
    assert stats.tolist() == [[1.0], [0.0], [1.0]]
    assert long_answer.aggregate(stats) == pytest.approx(2 / 3)
    assert long_answer.per_sample(stats).tolist() == [1.0, 0.0, 1.0]
    # Sample variance of (1, 0, 1) is 1/3; over sqrt(3) documents: 1/3.
    assert long_answer.standard_error(stats) == pytest.approx(1 / 3)
    assert long_answer.paired_test == "mcnemar"


def test_a_name_is_registered_once(long_answer):
    with pytest.raises(LlamabenchError, match="long_answer"):

        class Again(MeanMetric):
            name = "long_answer"
            higher_is_better = True
            scale = "0-1"
            needs = ("prediction",)

            def score(self, outcome: Outcome) -> float:
                return 0.0


def test_right_or_wrong_metrics_take_mcnemar_the_rest_the_bootstrap():
    mcnemar = {name for name, metric in METRICS.items() if metric.paired_test == "mcnemar"}
    assert mcnemar == {"acc", "acc_norm", "exact_match"}
    assert all(isinstance(METRICS[name], BinaryMetric) for name in mcnemar)


def test_mcnemar_p_value_counts_discordant_documents():
    acc = get_metric("acc")
    baseline = np.array([[1.0]] * 8 + [[0.0]] * 2)
    candidate = np.array([[0.0]] * 7 + [[1.0], [0.0], [1.0]])  # 7 right -> wrong, 1 wrong -> right (document 9)
    # P(X >= 7), X ~ Bin(8, 1/2) = (C(8,7) + C(8,8)) / 256
    test = acc.paired_test_of(baseline, candidate, np.zeros(1))
    assert (test.name, test.p_value, test.differing) == ("mcnemar", 9 / 256, 8)
    assert test.smallest_p == 1 / 256  # all 8 discordant documents worse


def test_corpus_metric_aggregates_summed_statistics():
    ppl = get_metric("word_perplexity")
    assert isinstance(ppl, CorpusMetric)
    rows = np.array([[-10.0, 4.0], [-2.0, 2.0]])
    assert ppl.aggregate(rows) == pytest.approx(math.exp(12 / 6))
    assert ppl.per_sample(rows).tolist() == pytest.approx([math.exp(2.5), math.exp(1.0)])
    assert math.isnan(ppl.standard_error(rows[:1]))
