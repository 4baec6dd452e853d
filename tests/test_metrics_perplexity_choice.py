"""Hand-computed perplexity, bits-per-byte, multiple-choice accuracy, stderr and registry errors."""

import math

import numpy as np
import pytest

from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS, CorpusMetric, Outcome, get_metric

# "Hello  world\n": re.split(r"\s+") gives ["Hello", "world", ""] -> 3 words, 13 bytes.
# "naïve café": 2 words, 12 bytes (ï and é take 2 bytes each).
# "x": 1 word, 1 byte.
DOCS = [
    Outcome("a", loglikelihood=-10.0, n_tokens=4, units_text="Hello  world\n"),
    Outcome("b", loglikelihood=-7.5, n_tokens=5, units_text="naïve café"),
    Outcome("c", loglikelihood=-2.0, n_tokens=1, units_text="x"),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("word_perplexity", math.exp((10.0 + 7.5 + 2.0) / (3 + 2 + 1))),
        ("byte_perplexity", math.exp((10.0 + 7.5 + 2.0) / (13 + 12 + 1))),
        ("bits_per_byte", (10.0 + 7.5 + 2.0) / (13 + 12 + 1) / math.log(2)),
        ("token_perplexity", math.exp((10.0 + 7.5 + 2.0) / (4 + 5 + 1))),
    ],
)
def test_loglikelihood_metrics_by_hand(name, expected):
    metric = get_metric(name)
    assert isinstance(metric, CorpusMetric) and not metric.higher_is_better
    assert metric.aggregate(metric.stats(DOCS)) == pytest.approx(expected, rel=1e-12)


def test_per_document_word_perplexity():
    metric = get_metric("word_perplexity")
    expected = [math.exp(10.0 / 3), math.exp(7.5 / 2), math.exp(2.0 / 1)]
    assert metric.per_sample(metric.stats(DOCS)) == pytest.approx(expected, rel=1e-12)


def test_missing_loglikelihood_is_an_error():
    with pytest.raises(LlamabenchError, match="'z'"):
        get_metric("token_perplexity").stats([Outcome("z", n_tokens=3)])


# Choice 0 has the higher total loglikelihood, choice 1 the higher per-character one:
# acc picks 0 (-6 > -8), acc_norm picks 1 (-8/16 = -0.5 > -6/4 = -1.5).
CHOICES = ["blue", "sixteen chars ok"]


@pytest.mark.parametrize(("label", "acc", "acc_norm"), [(0, 1.0, 0.0), (1, 0.0, 1.0)])
def test_acc_and_acc_norm_differ(label, acc, acc_norm):
    outcome = Outcome("q", choices=CHOICES, choice_loglikelihoods=[-6.0, -8.0], label=label)
    assert get_metric("acc").stats([outcome])[0, 0] == acc
    assert get_metric("acc_norm").stats([outcome])[0, 0] == acc_norm


def test_acc_mean_over_documents():
    outcomes = [
        Outcome("q1", choices=["x", "y"], choice_loglikelihoods=[-1.0, -2.0], label=0),
        Outcome("q2", choices=["x", "y"], choice_loglikelihoods=[-1.0, -2.0], label=1),
        Outcome("q3", choices=["x", "y", "z"], choice_loglikelihoods=[-3.0, -2.0, -2.5], label=1),
    ]
    metric = get_metric("acc")
    assert metric.aggregate(metric.stats(outcomes)) == pytest.approx(2 / 3)


def test_stderr_of_mean_metric_is_sample_std_over_sqrt_n():
    stats = np.array([[1.0], [0.0], [1.0], [1.0]])
    mean = 3 / 4
    sample_var = ((1 - mean) ** 2 * 3 + (0 - mean) ** 2) / (4 - 1)
    assert get_metric("acc").standard_error(stats) == pytest.approx(math.sqrt(sample_var) / math.sqrt(4))
    assert math.isnan(get_metric("acc").standard_error(stats[:1]))


def test_stderr_of_corpus_metric_is_seeded_bootstrap():
    metric = get_metric("word_perplexity")
    stats = metric.stats(DOCS)
    value = metric.standard_error(stats, iters=500, seed=3)
    assert value > 0 and value == metric.standard_error(stats, iters=500, seed=3)
    # Same draws, resampling the rows themselves instead of summing them with bincount weights.
    rng = np.random.default_rng(3)
    naive = [metric.aggregate(stats[rng.integers(0, len(stats), size=len(stats))]) for _ in range(500)]
    assert value == pytest.approx(np.std(naive, ddof=1), rel=1e-12)


def test_unknown_metric():
    with pytest.raises(LlamabenchError, match="unknown metric 'blue'.*bleu"):
        get_metric("blue")
    assert {"exact_match", "f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(METRICS)
    assert {
        "word_perplexity",
        "byte_perplexity",
        "bits_per_byte",
        "token_perplexity",
        "acc",
        "acc_norm",
    } <= set(METRICS)
