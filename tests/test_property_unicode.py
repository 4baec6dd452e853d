"""Arbitrary Unicode (empty, very long, odd scripts and controls) flows through scoring and metrics."""

import math
import sys

from conftest import byte_tokenizer, tiny_llama
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llamabench.backends.hf.backend import HFBackend
from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.requests import RollingRequest

BACKEND = HFBackend(tiny_llama(), byte_tokenizer(), model_id="tiny", max_length=32, progress=False)
TEXT = st.text(st.characters(codec="utf-8"), max_size=300) | st.just("") | st.text(max_size=3).map(lambda s: s * 500)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_rolling_loglikelihood_is_finite_and_counts_every_byte(text):
    ((loglikelihood, n_tokens),) = BACKEND.loglikelihood_rolling([RollingRequest(text)])
    assert n_tokens == len(text.encode("utf-8"))
    assert math.isfinite(loglikelihood) and loglikelihood <= 0
    assert (loglikelihood == 0) == (n_tokens == 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=4))
def test_text_metrics_are_finite_and_in_range(pairs):
    outcomes = [Outcome(doc_id=str(i), prediction=p, targets=[t]) for i, (p, t) in enumerate(pairs)]
    for name, upper in [
        ("bleu", 100),
        ("chrf", 100),
        ("exact_match", 100),
        ("f1", 100),
        ("rouge1", 1),
        ("rougeLsum", 1),
    ]:
        metric = get_metric(name)
        value = metric.aggregate(metric.stats(outcomes))
        assert math.isfinite(value) and 0 <= value <= upper + 1e-9, (name, value)  # sacrebleu rounds to 100+4e-14


# exp(x) overflows a double exactly when x > ln(DBL_MAX) ≈ 709.78 (IEEE 754 binary64).
OVERFLOW_EXPONENT = math.log(sys.float_info.max)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TEXT, st.floats(-1e4, 0), st.integers(1, 10_000)), min_size=1, max_size=4))
@example([("", -705.0, 1)])  # one word, one byte, one token: exp(705) ≈ 1.6e306 is finite
@example([("", -710.0, 1)])  # exp(710) is not
def test_perplexity_metrics_are_finite_for_nonempty_units(docs):
    outcomes = [
        Outcome(doc_id=str(i), loglikelihood=ll, n_tokens=n, units_text=text + "x")
        for i, (text, ll, n) in enumerate(docs)
    ]
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"):
        metric = get_metric(name)
        value = metric.aggregate(metric.stats(outcomes))
        assert not math.isnan(value) and value >= 0, (name, value)
        per_unit = -sum(ll for _, ll, _ in docs) / metric.stats(outcomes)[:, 1].sum()
        assert math.isfinite(value) == (per_unit < OVERFLOW_EXPONENT or name == "bits_per_byte"), (name, value)
