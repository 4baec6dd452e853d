"""The HTTP backend against a real ``vllm serve`` of SmolLM2 fp32 on 127.0.0.1, started once for the session.

Parity (two engines, one contract): rolling log-likelihoods and multiple-choice log-likelihoods equal the
transformers backend's within ``RELATIVE_TOLERANCE``; greedy generations equal except where the transformers model's
top-2 logits at the first differing token are within ``TIE_GAP`` (each difference printed). Faults go through a
real fault-injecting proxy (``fault_proxy.py``) in front of the server, never a mock of the client.

The vLLM environment: ``$LLAMABENCH_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` (``bash install.sh vllm``);
missing, the tests skip, or fail under CI.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

from llamabench.backends.base import IdentityChanged
from llamabench.backends.server.backend import ServerBackend
from llamabench.backends.server.client import RetryPolicy, ServerError
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import Fault, FaultProxy  # noqa: E402
from vllm_env import free_port, vllm_serve  # noqa: E402

MAX_LENGTH = 128  # both engines: long texts take several rolling windows, long contexts are left-truncated
SERVER_CONTEXT = 1024
# Measured on this CPU (see docs/servers.md): the largest relative difference was 3.0e-7 (rolling) and 5.2e-6
# (multiple choice); fp32 kernels that sum in different orders.
RELATIVE_TOLERANCE = 1e-4
# A greedy generation may differ from the transformers one only where that model's two best logits were this close.
TIE_GAP = 1e-3
FAST = RetryPolicy(timeout=60, attempts=4, first_wait=0.05, max_wait=0.2)


@pytest.fixture(scope="session")
def dense_smollm2() -> Path:
    """The embedded SmolLM2 GGUF as the dense fp32 folder the transformers backend loads (written once)."""
    from llamabench.backends.loading.gguf import dense_copy
    from llamabench.backends.loading.model_source import pin, resolve_model

    source = resolve_model(None)
    pinned = pin(source)
    return dense_copy(source, pinned.fingerprint, verify=lambda: pinned.check("converted"))


@pytest.fixture(scope="session")
def vllm_server(dense_smollm2, tmp_path_factory):
    """``vllm serve`` of SmolLM2 fp32 on a free port; its base URL. Stopped at the end of the session."""
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    with vllm_serve(dense_smollm2, log, served_name="smollm2", max_model_len=SERVER_CONTEXT) as url:
        yield url


@pytest.fixture(scope="module")
def served(vllm_server) -> ServerBackend:
    return ServerBackend.connect(f"{vllm_server}/v1", max_length=MAX_LENGTH, policy=FAST)


@pytest.fixture(scope="module")
def hf_smollm2():
    from llamabench.backends.hf.backend import HFBackend

    return HFBackend.load(None, device="cpu", dtype="float32", max_length=MAX_LENGTH)


def _jsonl(path: Path, n: int, keep=lambda row: True) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if keep(row):
                rows.append(row)
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="module")
def texts(data_dir) -> list[RollingRequest]:
    """Four WikiText-2 paragraphs (one of them takes several windows) and an empty text; one with stride 64."""
    rows = _jsonl(data_dir / "wikitext2_raw_test" / "test.jsonl", 4, lambda row: len(row["text"]) > 300)
    requests = [RollingRequest(row["text"][:2000]) for row in rows]
    return [*requests, RollingRequest(""), RollingRequest(rows[0]["text"][:2000], stride=64)]


@pytest.fixture(scope="module")
def choices(data_dir) -> list[LoglikelihoodRequest]:
    """SQuAD questions, each with its gold answer and the next questions' answers as distractors; an empty
    context; a context longer than the window (left truncation)."""
    rows = _jsonl(data_dir / "squad_v1.1_dev" / "dev.jsonl", 5)
    answers = [row["answers"]["text"][0] if isinstance(row["answers"], dict) else row["answers"][0] for row in rows]
    requests = [
        LoglikelihoodRequest(f"Question: {row['question']}\nAnswer:", f" {answers[(i + k) % len(rows)]}")
        for i, row in enumerate(rows)
        for k in range(3)
    ]
    long_context = rows[0]["context"] * 2
    # The model's own greedy answer (seen from the transformers backend): its greedy flag is true.
    greedy = LoglikelihoodRequest("The capital of France is", " Paris")
    return [
        *requests,
        greedy,
        LoglikelihoodRequest("", "The Denver Broncos"),
        LoglikelihoodRequest(long_context, " Denver"),
    ]


@pytest.fixture(scope="module")
def prompts(data_dir) -> list[GenerationRequest]:
    rows = _jsonl(data_dir / "wmt22_generaltest_de-en" / "test.jsonl", 6)
    template = "Translate the following German text into English.\nGerman: {}\nEnglish:"
    return [GenerationRequest(template.format(row["source"]), 32, until=("\n",)) for row in rows]


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_rolling_loglikelihoods_match_the_transformers_backend(served, hf_smollm2, texts):
    got, want = served.loglikelihood_rolling(texts), hf_smollm2.loglikelihood_rolling(texts)
    assert [n for _, n in got] == [n for _, n in want]
    assert sum(n for _, n in want) > 3 * MAX_LENGTH  # several windows were scored
    worst = max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True) if w)
    print(f"rolling: largest relative difference {worst:.2e}")
    assert worst <= RELATIVE_TOLERANCE
    assert got[len(texts) - 2] == (0.0, 0)


def test_choice_loglikelihoods_and_greedy_flags_match_the_transformers_backend(served, hf_smollm2, choices):
    got, want = served.loglikelihood(choices), hf_smollm2.loglikelihood(choices)
    worst = max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True))
    print(f"multiple choice: largest relative difference {worst:.2e}")
    assert worst <= RELATIVE_TOLERANCE
    assert [greedy for _, greedy in got] == [greedy for _, greedy in want]
    assert any(greedy for _, greedy in want)
    assert served.truncated_tokens(choices) == hf_smollm2.truncated_tokens(choices)
    assert served.truncated_tokens(choices)[-1] > 0


def test_greedy_generations_match_the_transformers_backend_except_near_ties(served, hf_smollm2, prompts):
    import torch

    got, want = served.generate(prompts), hf_smollm2.generate(prompts)
    for request, text, reference in zip(prompts, got, want, strict=True):
        if text == reference:
            continue
        # Where the two texts part, how close the transformers model's two best next tokens were.
        shared = os.path.commonprefix([text, reference])
        ids = hf_smollm2.tokenizer(request.prompt + shared, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = hf_smollm2.model(ids).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        gap = float(top2[0] - top2[1])
        print(f"differs after {shared!r}: server {text!r} vs transformers {reference!r}, top-2 gap {gap:.2e}")
        assert gap < TIE_GAP
    assert sum(text == reference for text, reference in zip(got, want, strict=True)) >= len(prompts) - 1


def test_sampled_generations_follow_their_seed(served, prompts):
    sampled = [GenerationRequest(prompts[0].prompt, 16, greedy=False, seed=seed) for seed in (1, 1, 2, 3)]
    texts = served.generate(sampled)
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1


def test_a_killed_server_repeats_no_request_a_probe_vouched_for(vllm_server, texts, tmp_path):
    """Results wait for a probe after them before they are stored (``wrappers/cache.py``): a kill loses those since
    the last agreeing probe (how many depends on timing, so it is not asserted), and repeats none stored before."""
    direct = ServerBackend.connect(f"{vllm_server}/v1", max_length=MAX_LENGTH)
    reference = direct.loglikelihood_rolling(texts)
    cache = RequestCache(tmp_path / "cache.db")
    proxy = FaultProxy(vllm_server, die_after=2 + 6).start()  # the two probes, then six windows
    killed = CachedBackend(_connect(proxy, max_in_flight=2), cache)
    with pytest.raises(ServerError, match="connection failed|attempts"):
        killed.loglikelihood_rolling(texts)
    proxy.stop()
    assert len(cache) >= 1  # the empty text, at least: finished at once, and the first probe after it agreed
    identity = killed.inner.cache_identity()
    cached = cache.get_many([CachedBackend._key(identity, "rolling", text) for text in texts])

    again = FaultProxy(vllm_server, port=proxy.port).start()  # the server is back, at the same address
    try:
        rerun = CachedBackend(_connect(again), cache)
        results = rerun.loglikelihood_rolling(texts)
    finally:
        again.stop()
    assert [n for _, n in results] == [n for _, n in reference]
    assert max(_relative(g, w) for (g, _), (w, _) in zip(results, reference, strict=True) if w) <= 1e-5
    repeated = [body["prompt"] for body in again.completions()[2:]]
    windows = {index: _windows(text, direct) for index, text in enumerate(texts)}
    stored = [
        i for i, text in enumerate(texts) if text.text and CachedBackend._key(identity, "rolling", text) in cached
    ]
    assert rerun.hits >= len(stored)
    pending = [w for index, spans in windows.items() if index not in stored for w in spans]
    finished_windows = [w for index in stored for w in windows[index] if w not in pending]
    assert not any(w in repeated for w in finished_windows)


def _windows(text: RollingRequest, backend: ServerBackend) -> list[list[int]]:
    from llamabench.backends.common.score_items import rolling_windows

    tokens = backend.tokens
    return [w.tokens for w in rolling_windows(tokens.encode(text.text), tokens.prefix_token, MAX_LENGTH, text.stride)]


def _connect(proxy: FaultProxy, max_in_flight: int = 4, policy: RetryPolicy = FAST, **keys) -> ServerBackend:
    return ServerBackend.connect(proxy.url, max_length=MAX_LENGTH, max_in_flight=max_in_flight, policy=policy, **keys)


@pytest.mark.parametrize("kind", ["429", "truncate", "malformed"])
def test_transient_faults_are_retried_to_the_same_numbers(vllm_server, served, choices, kind):
    want = served.loglikelihood(choices[:6])
    proxy = FaultProxy(vllm_server).start()
    try:
        backend = _connect(proxy, policy=RetryPolicy(timeout=60, attempts=8, first_wait=0.05, max_wait=0.2))
        proxy.faults.append(Fault(kind, count=5))
        got = backend.loglikelihood(choices[:6])
    finally:
        proxy.stop()
    assert max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True)) <= 1e-5
    assert backend.client.retried == 5


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault("429"), "HTTP 429 rate limited, 4 attempts"),
        (Fault("malformed"), "not complete JSON"),
        (Fault("hang"), "no answer within --request-timeout 3 s"),
    ],
)
def test_a_fault_that_persists_stops_the_run_in_bounded_time(vllm_server, choices, fault, message):
    proxy = FaultProxy(vllm_server).start()
    try:
        backend = _connect(proxy)  # the connection's probes under FAST's generous deadline
        backend.client.policy = RetryPolicy(timeout=3, attempts=4, first_wait=0.05, max_wait=0.2)
        proxy.faults.append(fault)
        started = time.monotonic()
        with pytest.raises(ServerError, match=message):
            backend.loglikelihood(choices[:2])
        took = time.monotonic() - started
    finally:
        proxy.stop()
    assert took < 120  # 4 attempts of at most 3 s each (a hang): far below this on any machine


def test_an_answer_that_never_comes_is_sent_again_at_the_deadline(vllm_server, served, choices):
    want = served.loglikelihood(choices[:1])
    proxy = FaultProxy(vllm_server).start()
    try:
        backend = _connect(proxy)
        # A deadline far above any answer of this server, however loaded the machine: only the hang reaches it.
        backend.client.policy = RetryPolicy(timeout=20, attempts=3, first_wait=0.05, max_wait=0.2)
        proxy.faults.append(Fault("hang", count=1))
        got = backend.loglikelihood(choices[:1])
    finally:
        proxy.stop()
    assert math.isclose(got[0][0], want[0][0], rel_tol=1e-5)
    assert backend.client.retried == 1


def test_a_probe_that_times_out_is_an_error_not_another_log_probability_form(vllm_server):
    """A timeout says nothing about what the server offers: the connection stops rather than fall back to echo."""
    proxy = FaultProxy(vllm_server, faults=[Fault("hang", when=lambda body: "prompt_logprobs" in body)]).start()
    try:
        with pytest.raises(ServerError, match="no answer within --request-timeout 10 s"):
            _connect(proxy, policy=RetryPolicy(timeout=10, attempts=1))
    finally:
        proxy.stop()


def test_a_server_that_swapped_its_model_never_gets_the_old_results(vllm_server, choices, tmp_path):
    cache = RequestCache(tmp_path / "cache.db")
    proxy = FaultProxy(vllm_server).start()
    try:
        first = CachedBackend(_connect(proxy), cache).loglikelihood(choices[:4])
        proxy.faults.append(Fault("swap"))  # same name, other weights: every log-probability 0.5 lower
        swapped_backend = CachedBackend(_connect(proxy), cache)
        swapped = swapped_backend.loglikelihood(choices[:4])
    finally:
        proxy.stop()
    assert swapped_backend.hits == 0
    assert all(new < old - 0.4 for (new, _), (old, _) in zip(swapped, first, strict=True))


@pytest.mark.parametrize("swap_after", [3, 6])
def test_a_server_that_swaps_its_weights_mid_run_stops_it_and_caches_none_of_them(
    vllm_server, choices, tmp_path, swap_after
):
    """A rolling deploy: after ``swap_after`` completions (probes included) the same name serves other weights. The
    run stops in one line; what the cache kept is the original model's: a cached run against the original server
    gives the numbers of an uncached one (the cache path against the direct one)."""
    direct = ServerBackend.connect(f"{vllm_server}/v1", max_length=MAX_LENGTH)
    reference = direct.loglikelihood(choices[:8])
    cache = RequestCache(tmp_path / "cache.db")
    proxy = FaultProxy(vllm_server).start()
    try:
        backend = CachedBackend(_connect(proxy, max_in_flight=1), cache)
        proxy.faults += [Fault("none", count=swap_after), Fault("swap")]  # every answer after: 0.5 lower
        with pytest.raises(IdentityChanged) as stopped:
            backend.loglikelihood(choices[:8])
    finally:
        proxy.stop()
    assert "\n" not in str(stopped.value) and "serves other weights" in str(stopped.value)
    plain = CachedBackend(ServerBackend.connect(f"{vllm_server}/v1", max_length=MAX_LENGTH), cache)
    again = plain.loglikelihood(choices[:8])
    assert max(_relative(g, w) for (g, _), (w, _) in zip(again, reference, strict=True)) <= 1e-5


def test_a_server_without_prompt_logprobs_fails_before_any_request_naming_the_task(vllm_server, tmp_path, capsys):
    from llamabench.pipeline import evaluate_checkpoint

    proxy = FaultProxy(vllm_server, refused_forms=("prompt_logprobs", "echo")).start()
    text = tmp_path / "doc.txt"
    text.write_text("A short document to score.\n")
    try:
        with pytest.raises(LlamabenchError) as failure:
            evaluate_checkpoint(proxy.url, [], text=[str(text)], max_length=MAX_LENGTH, no_cache=True)
        sent = proxy.completions()
    finally:
        proxy.stop()
    assert "task text:" in str(failure.value)
    assert "needs the prompt's log-probabilities" in str(failure.value)
    assert "does not return" in str(failure.value)
    assert len({json.dumps(body["prompt"]) for body in sent}) == 1  # the probes only: no document was sent


def test_prompt_logprobs_at_the_wrong_positions_are_refused_for_scoring(vllm_server, choices):
    """A server whose prompt log-probabilities disagree with its own generation's (as llama-cpp-python's echo does
    for a prompt without BOS) is never used for scoring: a wrong number that looks right is worse than none. (vLLM
    answers both forms correctly, so the proxy skews both.)"""
    proxy = FaultProxy(vllm_server, faults=[Fault("skew")]).start()
    try:
        backend = _connect(proxy)
        with pytest.raises(LlamabenchError, match="at the positions its own generation reports"):
            backend.require_loglikelihoods("squad_mc")
    finally:
        proxy.stop()
    assert backend.logprob_form is None


def test_the_api_key_is_sent_and_recorded_nowhere(vllm_server, choices, tmp_path, monkeypatch):
    secret = "sk-test-4f1c9a77"
    monkeypatch.setenv("LLAMABENCH_TEST_KEY", secret)
    cache = RequestCache(tmp_path / "cache.db")
    proxy = FaultProxy(vllm_server).start()
    try:
        backend = CachedBackend(_connect(proxy, api_key_env="LLAMABENCH_TEST_KEY"), cache)
        backend.loglikelihood(choices[:2])
        proxy.faults.append(Fault("429"))
        with pytest.raises(ServerError) as failure:
            backend.loglikelihood(choices[2:3])
    finally:
        proxy.stop()
    assert proxy.authorizations and set(proxy.authorizations) == {f"Bearer {secret}"}
    recorded = json.dumps(
        [backend.describe(), backend.cache_identity(), str(failure.value), repr(backend.inner.client)]
    )
    assert secret not in recorded
    assert secret.encode() not in (tmp_path / "cache.db").read_bytes()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"model": ["ckpt"], "served_model": "m"}, "--served-model applies to --engine server only"),
        ({"model": ["http://127.0.0.1:1/v1"], "api_key_env": "MY-KEY"}, "--api-key-env MY-KEY must name"),
        ({"model": ["http://127.0.0.1:1/v1"], "max_concurrent_requests": 0}, "--max-concurrent-requests 0"),
        ({"model": ["http://127.0.0.1:1/v1"], "request_timeout": 0}, "--request-timeout 0 must be > 0"),
    ],
)
def test_server_flags_are_checked_before_anything_runs(flags, message):
    from llamabench.backends.registry import check_engines
    from llamabench.config import RunConfig

    with pytest.raises(LlamabenchError, match=message):
        check_engines(RunConfig(tasks=["ppl"], **flags).validate())


def test_a_server_that_is_not_there_fails_in_one_line_after_bounded_retries():
    port = free_port()
    with pytest.raises(ServerError, match=rf"server http://127.0.0.1:{port}/v1/models: connection failed .*3 attempts"):
        ServerBackend.connect(
            f"http://127.0.0.1:{port}/v1", policy=RetryPolicy(timeout=1, attempts=3, first_wait=0.01, max_wait=0.02)
        )


def test_a_run_through_the_server_gives_the_in_process_perplexity(vllm_server, data_dir, tmp_path, monkeypatch):
    """Two engines, one pipeline: ``--text`` perplexity through ``--model URL`` and through the embedded model."""
    from llamabench.pipeline import evaluate_checkpoint

    rows = _jsonl(data_dir / "wikitext2_raw_test" / "test.jsonl", 2, lambda row: len(row["text"]) > 300)
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(row["text"][:1200] for row in rows), encoding="utf-8")
    flags = {"text": [str(text)], "max_length": MAX_LENGTH, "output_dir": tmp_path / "runs"}
    with monkeypatch.context() as patch:
        patch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))  # the served run's request cache: this test's own
        served_run = evaluate_checkpoint(f"{vllm_server}/v1", [], **flags)
    local_run = evaluate_checkpoint(None, [], dtype="float32", device="cpu", no_cache=True, **flags)
    task = served_run.results.task.iloc[0]
    for metric in ("word_perplexity", "bits_per_byte"):
        assert math.isclose(served_run.value(task, metric), local_run.value(task, metric), rel_tol=RELATIVE_TOLERANCE)
    backend = served_run.manifest.to_dict()["backend"]
    assert backend["model"] == "smollm2" and backend["fingerprint"].startswith("server-")


# -- the echo form, against the transformers backend ----------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_proxy(vllm_server):
    """The server behind a proxy that refuses vLLM's ``prompt_logprobs`` (400, as OpenAI's API): the backend must
    read the prompt's log-probabilities from ``echo`` with ``logprobs``."""
    proxy = FaultProxy(vllm_server, refused_forms=("prompt_logprobs",)).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def echoed(echo_proxy) -> ServerBackend:
    backend = _connect(echo_proxy)
    assert backend.logprob_form == "echo"
    return backend


def test_echo_rolling_loglikelihoods_match_the_transformers_backend(echoed, echo_proxy, hf_smollm2, texts):
    got, want = echoed.loglikelihood_rolling(texts), hf_smollm2.loglikelihood_rolling(texts)
    assert [n for _, n in got] == [n for _, n in want]
    worst = max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True) if w)
    print(f"echo rolling: largest relative difference {worst:.2e}")
    assert worst <= RELATIVE_TOLERANCE
    assert any(body.get("echo") for body in echo_proxy.answered)  # the answers came in the echo form


def test_echo_choice_loglikelihoods_and_greedy_flags_match_the_transformers_backend(echoed, hf_smollm2, choices):
    got, want = echoed.loglikelihood(choices), hf_smollm2.loglikelihood(choices)
    worst = max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True))
    print(f"echo multiple choice: largest relative difference {worst:.2e}")
    assert worst <= RELATIVE_TOLERANCE
    assert [greedy for _, greedy in got] == [greedy for _, greedy in want]
    assert any(greedy for _, greedy in want) and not all(greedy for _, greedy in want)


# -- impossible answers -------------------------------------------------------------------------------------------


def _scoring(body: dict) -> bool:
    return "prompt_logprobs" in body or bool(body.get("echo"))


def _each_prompt_value(change):
    """A rewrite applying ``change(position, value)`` to every prompt log-probability, in either form."""

    def rewrite(answer: dict, request: dict) -> None:
        for choice in answer["choices"]:
            for position, entries in enumerate(choice.get("prompt_logprobs") or []):
                for entry in (entries or {}).values():
                    entry["logprob"] = change(position, entry["logprob"])
            echoed = choice.get("logprobs") or {}
            if request.get("echo"):
                values, tops = echoed["token_logprobs"], echoed["top_logprobs"]
                echoed["token_logprobs"] = [None if v is None else change(p, v) for p, v in enumerate(values)]
                echoed["top_logprobs"] = [
                    None if top is None else {key: change(p, v) for key, v in top.items()} for p, top in enumerate(tops)
                ]

    return rewrite


def _drop_first_position(answer: dict, request: dict) -> None:
    """Every prompt log-probability one position early (the first dropped): read as it comes, each token gets the
    next one's log-probability."""
    for choice in answer["choices"]:
        if choice.get("prompt_logprobs"):
            choice["prompt_logprobs"] = choice["prompt_logprobs"][1:]
        echoed = choice.get("logprobs") or {}
        if request.get("echo"):
            for key in ("token_logprobs", "top_logprobs", "tokens", "text_offset"):
                echoed[key] = echoed[key][1:]


def _other_prompt_tokens(answer: dict, request: dict) -> None:
    """The server says it scored other tokens than those sent."""
    for choice in answer["choices"]:
        choice["prompt_token_ids"] = [token + 1 for token in request["prompt"]]


def _fewer_prompt_tokens(answer: dict, request: dict) -> None:
    answer["usage"]["prompt_tokens"] = len(request["prompt"]) - 1


IMPOSSIBLE = {
    "positive": (_each_prompt_value(lambda position, value: abs(value)), "positive log-probability"),
    "one slightly positive": (
        _each_prompt_value(lambda position, value: 0.01 if position == 7 else value),
        "positive log-probability 0.01",
    ),
    "-1e308": (_each_prompt_value(lambda position, value: -1e308 if position == 5 else value), "-1e+308"),
    "NaN": (_each_prompt_value(lambda position, value: float("nan") if position == 3 else value), "nan"),
    "one position early": (_drop_first_position, "log-probabilities for"),
    "other prompt tokens": (_other_prompt_tokens, "other prompt tokens"),
    "fewer prompt tokens": (_fewer_prompt_tokens, "counted"),
}


@pytest.mark.parametrize("form", ["prompt_logprobs", "echo"])
@pytest.mark.parametrize("impossible", list(IMPOSSIBLE))
def test_impossible_log_probabilities_are_refused_in_one_line_naming_the_server(vllm_server, texts, form, impossible):
    change, message = IMPOSSIBLE[impossible]
    refused = () if form == "prompt_logprobs" else ("prompt_logprobs",)
    proxy = FaultProxy(vllm_server, refused_forms=refused).start()
    try:
        backend = _connect(proxy)
        assert backend.logprob_form == form
        proxy.faults.append(Fault("rewrite", when=_scoring, change=change))
        with pytest.raises(LlamabenchError) as failure:
            backend.loglikelihood_rolling(texts[:1])
    finally:
        proxy.stop()
    line = str(failure.value)
    assert f"server {proxy.url}" in line and message in line and "\n" not in line


def test_impossible_log_probabilities_in_the_connection_probe_are_refused(vllm_server):
    change, message = IMPOSSIBLE["positive"]
    proxy = FaultProxy(vllm_server, faults=[Fault("rewrite", when=_scoring, change=change)]).start()
    try:
        with pytest.raises(LlamabenchError, match=message):
            _connect(proxy)
    finally:
        proxy.stop()


def test_a_generation_longer_than_asked_is_refused(vllm_server, prompts):
    def longer(answer: dict, request: dict) -> None:
        answer["usage"]["completion_tokens"] = request["max_tokens"] + 1

    proxy = FaultProxy(vllm_server).start()
    try:
        backend = _connect(proxy)
        proxy.faults.append(Fault("rewrite", when=lambda body: not _scoring(body), change=longer))
        with pytest.raises(LlamabenchError, match=f"server {proxy.url}.*33 tokens where at most 32"):
            backend.generate(prompts[:1])
    finally:
        proxy.stop()


# -- --tokenizer against the server's /tokenize -------------------------------------------------------------------


def _swapped_tokenizer(source: Path, folder: Path, first: str, second: str) -> Path:
    """``source``'s tokenizer with the ids of two tokens exchanged: the same vocabulary size, other ids."""
    import shutil

    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("first", "second"), [("Ġthe", "Ġand"), ("Ã©", "Ġ")])  # a word; "é" against a space
def test_a_local_tokenizer_that_disagrees_with_the_servers_is_refused(
    vllm_server, dense_smollm2, tmp_path, first, second
):
    other = _swapped_tokenizer(dense_smollm2, tmp_path / "other", first, second)
    with pytest.raises(LlamabenchError) as refused:
        ServerBackend.connect(f"{vllm_server}/v1", tokenizer=str(other), max_length=MAX_LENGTH, policy=FAST)
    line = str(refused.value)
    assert f"--tokenizer {other}" in line and f"server {vllm_server}/v1" in line and "\n" not in line


def test_the_served_models_own_tokenizer_is_accepted_with_the_same_numbers(vllm_server, dense_smollm2, served, choices):
    local = ServerBackend.connect(f"{vllm_server}/v1", tokenizer=str(dense_smollm2), max_length=MAX_LENGTH, policy=FAST)
    got, want = local.loglikelihood(choices[:4]), served.loglikelihood(choices[:4])
    assert max(_relative(g, w) for (g, _), (w, _) in zip(got, want, strict=True)) <= 1e-5


# -- a URL with credentials ---------------------------------------------------------------------------------------


def test_a_url_password_is_in_no_manifest_record_or_cache(vllm_server, tmp_path, monkeypatch):
    from llamabench.pipeline import evaluate_checkpoint

    password = "pw-5be0a3c1"
    text = tmp_path / "doc.txt"
    text.write_text("A short document to score, twice over. " * 4, encoding="utf-8")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    url = vllm_server.replace("http://", f"http://alice:{password}@") + "/v1"
    run = evaluate_checkpoint(url, [], text=[str(text)], max_length=MAX_LENGTH, output_dir=tmp_path / "runs")
    assert run.manifest.config["model"] == f"{vllm_server}/v1"
    for path in [*(tmp_path / "runs").rglob("*"), *(tmp_path / "cache").rglob("*")]:
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
