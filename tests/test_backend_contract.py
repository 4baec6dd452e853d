"""The rules ``backends/base.py`` states for every backend, checked against hand computation on every engine
present: log-probabilities summed from the tiny model's own forward pass (``model(...).logits``, not the backend's
scoring rows) over the tokens each rule says are fed, with the byte tokenizer (one token per byte).

Engines: ``hf`` always; ``ray`` (the transformers engine in Ray actors, seen by the driver as one backend) where Ray
is installed, on a local cluster serving the same weights from a saved checkpoint. The vLLM engine
and a served model live in vLLM's own environment, without pytest: tests/test_vllm_engine.py and
tests/test_server_backend.py compare them with the ``hf`` engine."""

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from llamabench.backends.finite import NonFiniteError
from llamabench.backends.hf.backend import HFBackend
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest
from tests.conftest import byte_tokenizer, save_tiny_model, tiny_llama

BOS = 256


def ids(text: str) -> list[int]:
    return byte_tokenizer()(text, add_special_tokens=False).input_ids


@torch.no_grad()
def by_hand(model, tokens: list[int], n_target: int) -> float:
    """log P of the last ``n_target`` tokens, each given every token before it in ``tokens``."""
    logprobs = torch.log_softmax(model(input_ids=torch.tensor([tokens[:-1]])).logits[0].double(), dim=-1)
    positions = range(len(tokens) - 1 - n_target, len(tokens) - 1)
    return float(sum(logprobs[p, tokens[p + 1]] for p in positions))


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def hf_backend(model, max_length: int = 64, **kwargs) -> HFBackend:
    return HFBackend(model, byte_tokenizer(), model_id="tiny", progress=False, max_length=max_length, **kwargs)


ENGINES = ["hf", *(["ray"] if importlib.util.find_spec("ray") else [])]


@dataclass
class RayEngines:
    """The tiny model's checkpoint served by Ray replicas, one backend per (max_length, batch_size), started once."""

    checkpoint: Path
    open: dict = field(default_factory=dict)

    def backend(self, max_length: int = 64, batch_size: int | str = "auto"):
        from llamabench.config import RunConfig
        from llamabench.scale.ray_backend import RayBackend

        key = (max_length, batch_size)
        if key not in self.open:
            model = str(self.checkpoint)
            config = RunConfig(model=[model], device="cpu", dtype="float32", max_length=max_length, ray="local")
            self.open[key] = RayBackend.start(replace(config, batch_size=batch_size), model, replicas=1)
        return self.open[key]


@pytest.fixture(scope="module")
def ray_engines(tmp_path_factory):
    ray = pytest.importorskip("ray")
    engines = RayEngines(save_tiny_model(tmp_path_factory.mktemp("contract") / "tiny"))
    # A slot per backend the tests open (three windows and batch sizes), each one replica of one thread.
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield engines
    for opened in engines.open.values():
        opened.close()
    ray.shutdown()


@pytest.fixture(params=ENGINES)
def backend(request, model):
    """The engine under test: ``backend(max_length=64, batch_size="auto")`` is a backend of the tiny model."""
    if request.param == "hf":
        return lambda **kwargs: hf_backend(model, **kwargs)
    return request.getfixturevalue("ray_engines").backend


def test_trailing_whitespace_of_the_context_is_scored_in_the_continuation(model, backend):
    ((got, _),) = backend().loglikelihood([LoglikelihoodRequest("Question: sky?\n \t", "Answer: blue")])
    context = ids("Question: sky?")
    assert got == pytest.approx(by_hand(model, context + ids("\n \tAnswer: blue"), 15), abs=1e-4)


def test_the_empty_context_is_scored_after_the_prefix_token(model, backend):
    for context in ("", "  "):
        ((got, _),) = backend().loglikelihood([LoglikelihoodRequest(context, "abc")])
        assert got == pytest.approx(by_hand(model, [BOS, *ids(context + "abc")], len(context) + 3), abs=1e-4)


def test_left_truncation_keeps_the_last_max_length_plus_one_tokens(model, backend):
    tiny_window = backend(max_length=4)
    request = LoglikelihoodRequest("abc", "xyz")
    ((got, _),) = tiny_window.loglikelihood([request])
    assert got == pytest.approx(by_hand(model, ids("bcxyz"), 3), abs=1e-4)  # the drawn example: c1 is cut
    assert tiny_window.truncated_tokens([request]) == [1]
    # A continuation longer than the window: its first tokens go too, and are not scored.
    ((got, _),) = tiny_window.loglikelihood([LoglikelihoodRequest("ab", "uvwxyz")])
    assert got == pytest.approx(by_hand(model, ids("vwxyz"), 4), abs=1e-4)


@torch.no_grad()
def greedy_continuation(model, tokens: list[int], n: int) -> list[int]:
    out = list(tokens)
    for _ in range(n):
        out.append(int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(tokens) :]


def test_is_greedy_means_every_continuation_token_is_the_argmax(model, backend):
    # Random weights may pick bytes that are not text on their own: use the first context whose greedy chain
    # of three tokens decodes to text that encodes back to the same tokens.
    for context in (f"The cat {n}" for n in range(100)):
        chain = greedy_continuation(model, ids(context), 3)
        text = byte_tokenizer().decode(chain)
        if ids(text) == chain:
            break
    else:
        raise AssertionError("no greedy chain of the tiny model round-trips as text")
    # Only the last token differs from the argmax: a continuation is greedy only if every token is.
    last = "a" if text[-1] != "a" else "b"
    results = backend().loglikelihood([LoglikelihoodRequest(context, t) for t in (text, text[:-1] + last)])
    assert [greedy for _, greedy in results] == [True, False]


def test_rolling_windows_of_a_ten_token_text_as_drawn(model, backend):
    text = "0123456789"
    t = ids(text)
    full = [
        by_hand(model, [BOS, *t[0:4]], 4),  # [BOS] (t0 t1 t2 t3)
        by_hand(model, t[3:8], 4),  # [t3] (t4 t5 t6 t7)
        by_hand(model, t[5:10], 2),  # [t5 t6 t7] (t8 t9)
    ]
    strided = [
        by_hand(model, [BOS, *t[0:4]], 4),
        by_hand(model, t[1:6], 2),  # [t1 t2 t3] (t4 t5)
        by_hand(model, t[3:8], 2),  # [t3 t4 t5] (t6 t7)
        by_hand(model, t[5:10], 2),  # [t5 t6 t7] (t8 t9)
    ]
    got = backend(max_length=4).loglikelihood_rolling([RollingRequest(text), RollingRequest(text, stride=2)])
    assert got[0][0] == pytest.approx(sum(full), abs=1e-4) and got[0][1] == 10
    assert got[1][0] == pytest.approx(sum(strided), abs=1e-4) and got[1][1] == 10
    assert backend().loglikelihood_rolling([RollingRequest("")]) == [(0.0, 0)]


def test_generation_is_cut_before_the_earliest_stop_string(model, backend):
    prompt = "Once upon"
    greedy = byte_tokenizer().decode(greedy_continuation(model, ids(prompt), 12))
    (plain,) = backend().generate([GenerationRequest(prompt, 12, until=())])
    assert plain == greedy  # max_new_tokens ends it (the tiny model's EOS aside)
    late, early = plain[6:8], plain[3]
    (cut,) = backend().generate([GenerationRequest(prompt, 12, until=(late, early))])
    assert cut == plain[: min(plain.find(late), plain.find(early))]


def test_a_sample_depends_on_its_request_only_not_on_its_batch(model, backend):
    """Path equivalence (one backend, two batchings), plus independence of seeds."""
    a, b = (GenerationRequest("Hello", 8, greedy=False, seed=seed) for seed in (1, 2))
    together = backend().generate([a, b])
    assert backend().generate([b]) == together[1:]
    assert backend(batch_size=1).generate([b, a]) == together[::-1]
    assert together[0] != together[1]


def test_on_done_reports_every_index_once_and_results_come_back_in_input_order(model, backend):
    requests = [LoglikelihoodRequest("a" * n, " b") for n in (9, 1, 5, 3)]
    reported: dict[int, tuple] = {}

    def on_done(indices, results):
        for index, result in zip(indices, results, strict=True):
            assert index not in reported
            reported[index] = result

    got = backend(batch_size=1).loglikelihood(requests, on_done=on_done)
    assert [reported[i] for i in range(len(requests))] == got
    for request, (logprob, _) in zip(requests, got, strict=True):
        assert logprob == pytest.approx(by_hand(model, ids(request.context + " b"), 2), abs=1e-4)
    assert backend().loglikelihood([]) == []


def test_non_finite_logits_raise_instead_of_giving_a_number():
    broken = tiny_llama()
    with torch.no_grad():
        broken.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        hf_backend(broken).loglikelihood([LoglikelihoodRequest("abc", " d")])
    with pytest.raises(NonFiniteError):
        hf_backend(broken).loglikelihood_rolling([RollingRequest("abcdef")])


# The contract's methods that run no model: a backend standing for another (Ray's replicas, a wrapper) answers
# each as the backend it stands for would, so none may fall back to Backend's default.
ANSWERED_BY_THE_INNER_BACKEND = (
    "truncated_tokens",
    "require_generation",
    "require_loglikelihoods",
    "apply_chat_template",
    "info",
    "statistics",
)


@pytest.mark.parametrize("name", ANSWERED_BY_THE_INNER_BACKEND)
def test_ray_and_wrappers_answer_every_contract_method_their_inner_backend_answers(name):
    from llamabench.backends.base import Backend, BackendWrapper
    from llamabench.scale.ray_backend import RayBackend

    for standing_in in (RayBackend, BackendWrapper):
        assert getattr(standing_in, name) is not getattr(Backend, name), f"{standing_in.__name__}.{name}"
