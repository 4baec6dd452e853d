"""Backend scoring against lm-eval's HF backend (the peer) on a tiny random LLaMA, and batch invariance."""

import copy
import math
import weakref

import pytest
import torch
from conftest import byte_tokenizer, lm_eval_instances, tiny_llama

from llamabench.backends.common.score_items import rolling_windows
from llamabench.backends.hf.backend import HFBackend
from llamabench.requests import LoglikelihoodRequest, RollingRequest

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Perplexity is the exponentiated average negative log-likelihood of a sequence of tokens, "
    "and it is lower for better language models.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "a",
]
PAIRS = [
    ("Question: what colour is the sky?\nAnswer:", " blue"),
    ("", "Hello world"),
    ("2 + 2 =", " 4"),
    ("The capital of France is ", "Paris"),
]


def lm_eval_model(max_length: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=tiny_llama(), tokenizer=byte_tokenizer(), max_length=max_length, batch_size=1, device="cpu")


@pytest.mark.parametrize("max_length", [16, 64, 256])
def test_rolling_loglikelihood_equals_lm_eval(tiny_backend, max_length):
    ours = tiny_backend(max_length=max_length).loglikelihood_rolling([RollingRequest(t) for t in TEXTS])
    peer = lm_eval_model(max_length).loglikelihood_rolling(
        lm_eval_instances("loglikelihood_rolling", [(t,) for t in TEXTS])
    )
    for (value, n_tokens), expected, text in zip(ours, peer, TEXTS, strict=True):
        assert n_tokens == len(text.encode())
        assert value == pytest.approx(expected, rel=1e-5)


def test_loglikelihood_equals_lm_eval(tiny_backend):
    ours = tiny_backend().loglikelihood([LoglikelihoodRequest(c, x) for c, x in PAIRS])
    peer = lm_eval_model(256).loglikelihood(lm_eval_instances("loglikelihood", PAIRS))
    for (value, greedy), (expected, expected_greedy) in zip(ours, peer, strict=True):
        assert value == pytest.approx(expected, rel=1e-5)
        assert greedy == expected_greedy


def test_rolling_loglikelihood_is_hand_sum_with_bos():
    model, tokenizer = tiny_llama(), byte_tokenizer()
    text = TEXTS[1]
    tokens = [tokenizer.bos_token_id] + list(tokenizer(text, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([tokens[:-1]])).logits[0].double(), dim=-1)
    expected = sum(float(logprobs[i, t]) for i, t in enumerate(tokens[1:]))
    backend = HFBackend(model, tokenizer, model_id="tiny", progress=False)
    ((value, n_tokens),) = backend.loglikelihood_rolling([RollingRequest(text)])
    assert n_tokens == len(tokens) - 1
    assert value == pytest.approx(expected, rel=1e-6)


def test_rolling_windows_match_lm_eval_windows():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    for n, max_length in [(1, 4), (5, 4), (8, 4), (9, 4), (30, 7), (3, 8)]:
        tokens = list(range(100, 100 + n))
        ours = rolling_windows(tokens, 0, max_length, None)
        peer = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, max_length, 1)]
        assert [(w.tokens[: -w.n_target], w.tokens[-w.n_target :]) for w in ours] == peer


def test_strided_windows_score_every_token_once_with_long_context():
    tokens = list(range(10))
    windows = rolling_windows(tokens, -1, max_length=4, stride=2)
    assert [w.tokens[-w.n_target :] for w in windows] == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert [w.tokens for w in windows[1:]] == [[1, 2, 3, 4, 5], [3, 4, 5, 6, 7], [5, 6, 7, 8, 9]]


def test_strided_windows_score_every_byte_and_change_the_loglikelihood(tiny_backend):
    # A random model gains nothing from context, so only the counts and a change are checked here;
    # test_real_model.py checks that SmolLM2's strided perplexity is lower.
    text = " ".join(TEXTS)
    (disjoint,) = tiny_backend(max_length=32).loglikelihood_rolling([RollingRequest(text)])
    (strided,) = tiny_backend(max_length=32).loglikelihood_rolling([RollingRequest(text, stride=8)])
    assert disjoint[1] == strided[1] == len(text.encode())
    assert strided[0] != disjoint[0]


@pytest.mark.parametrize("batch_size", [2, 3, "auto"])
def test_scores_are_batch_size_invariant(tiny_backend, batch_size):
    rolling = [RollingRequest(t) for t in TEXTS * 2]
    pairs = [LoglikelihoodRequest(c, x) for c, x in PAIRS * 2]
    one = tiny_backend(batch_size=1, max_length=64)
    many = tiny_backend(batch_size=batch_size, max_length=64)
    for (a, _), (b, _) in zip(one.loglikelihood_rolling(rolling), many.loglikelihood_rolling(rolling), strict=True):
        assert math.isclose(a, b, rel_tol=1e-4)
    for (a, ga), (b, gb) in zip(one.loglikelihood(pairs), many.loglikelihood(pairs), strict=True):
        assert math.isclose(a, b, rel_tol=1e-4) and ga == gb
    if batch_size != 1:
        assert max(many.policy.sizes_used) > 1


def test_context_longer_than_the_window_is_left_truncated(tiny_backend):
    backend = tiny_backend(max_length=16)
    context, continuation = "abcdefghijklmnopqrstuvwxyz0123456789", " tail"
    (truncated, _), (explicit, _) = backend.loglikelihood(
        [LoglikelihoodRequest(context, continuation), LoglikelihoodRequest(context[-12:], continuation)]
    )
    assert truncated == pytest.approx(explicit, rel=1e-6)  # 12 context + 5 continuation tokens = window + 1


class _Activations:
    """Stands in for the tensors a failed forward pass allocated."""


def test_an_out_of_memory_batch_is_freed_before_its_halves_run():
    from llamabench.backends.hf.batching import BatchPolicy

    failed: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def forward(items: list[int]) -> list[int]:
        if failed:
            alive_at_retry.append(failed[-1]() is not None)
        activations = _Activations()  # held by this frame, so by the exception's traceback
        if len(items) > 2:
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [item * 10 for item in items]

    policy = BatchPolicy(token_budget=100)
    assert policy.run([1, 2, 3, 4], forward) == [10, 20, 30, 40]
    assert alive_at_retry == [False, False]
    assert policy.sizes_used == {2: 2} and policy.token_budget == 50


def test_describe_records_the_peak_memory(tiny_backend):
    import resource

    backend = tiny_backend()
    backend.loglikelihood_rolling([RollingRequest("some text")])
    peak = backend.describe()["peak_memory"]
    assert peak["measure"].startswith("process peak RSS")
    assert 0 < peak["bytes"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 0.2% per element); the log-softmax runs in fp32 on
# the head's output either way, so what differs is the body's rounding. Tolerances are per scored token, in nats.
BF16_TINY_NATS_PER_TOKEN = 1e-3  # a random 2-layer model (near-uniform predictions): measured ≤ 1.4e-4
BF16_SMOLLM2_NATS_PER_TOKEN = 0.05  # a trained 30-layer model amplifies rounding: measured ≤ 0.018


def bf16_gap_per_token(model, tokenizer, texts: list[str], max_length: int) -> list[float]:
    """Per text: |log-likelihood in bf16 − in fp32| / scored tokens, for a copy of ``model`` in each dtype."""
    requests = [RollingRequest(t) for t in texts]
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        backend = HFBackend(copy.deepcopy(model).to(dtype), tokenizer, model_id="m", max_length=max_length)
        backend.progress = False
        results[dtype] = backend.loglikelihood_rolling(requests)
    return [abs(b - a) / n for (a, n), (b, _) in zip(results[torch.float32], results[torch.bfloat16], strict=True)]


def test_bf16_scores_are_fp32_scores_within_tolerance():
    gaps = bf16_gap_per_token(tiny_llama(), byte_tokenizer(), TEXTS, max_length=64)
    assert max(gaps) < BF16_TINY_NATS_PER_TOKEN


def test_bf16_loglikelihoods_of_pairs_are_close_and_in_order(tiny_backend):
    pairs = [LoglikelihoodRequest(c, x) for c, x in PAIRS]
    fp32 = tiny_backend().loglikelihood(pairs)
    bf16 = HFBackend(tiny_llama().to(torch.bfloat16), byte_tokenizer(), model_id="m", progress=False)
    assert bf16.describe()["dtype"] == "bfloat16"
    for (a, _), (b, _), (context, continuation) in zip(fp32, bf16.loglikelihood(pairs), PAIRS, strict=True):
        assert abs(a - b) < BF16_TINY_NATS_PER_TOKEN * len((context + continuation).encode())


def test_bf16_smollm2_scores_are_fp32_scores_within_tolerance(smollm2):
    texts = TEXTS[:2]
    gaps = bf16_gap_per_token(smollm2.model, smollm2.tokenizer, texts, max_length=256)
    assert max(gaps) < BF16_SMOLLM2_NATS_PER_TOKEN


@pytest.mark.parametrize(
    ("device", "bf16_supported", "expected"),
    [("cpu", True, "float32"), ("cuda", True, "bfloat16"), ("cuda:1", False, "float16")],
)
def test_default_dtype_falls_back_where_the_gpu_lacks_bf16(monkeypatch, device, bf16_supported, expected):
    from llamabench.backends.common.model_facts import default_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert default_dtype(device) == expected
