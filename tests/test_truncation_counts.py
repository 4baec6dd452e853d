"""Truncation is visible: every token a backend drops to fit its window is counted per document (samples table),
per task (manifest notes) and warned about once per task. The oracle is hand computation with the byte tokenizer
(one token per UTF-8 byte), by lm-eval's rules: scoring keeps the last ``max_length + 1`` tokens of context and
continuation (the last is predicted, never fed); generation keeps the last ``max_length - max_new_tokens`` prompt
tokens; rolling perplexity never truncates (it windows)."""

import json

import pytest

from llamabench.backends.base import Backend
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.config import RunConfig
from llamabench.pipeline import Evaluation
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

MAX_LENGTH = 32
MAX_NEW = 4

GENERATE_TASK = """\
name: long_prompts
kind: generate
dataset: {local: long.jsonl}
prompt: "{{ text }}"
target: "{{ answer }}"
generation: {max_new_tokens: 4, until: []}
metrics: [exact_match]
"""

# Prompt lengths in bytes (= tokens): 50 and 40 exceed the room of 32 - 4 = 28; 28 fits exactly; 5 fits.
PROMPT_BYTES = [50, 40, 28, 5]


def dropped_by_hand(n_tokens: int, keep: int) -> int:
    return max(0, n_tokens - keep)


def test_loglikelihood_counts_tokens_dropped_from_the_left(tiny_backend):
    backend = tiny_backend(max_length=MAX_LENGTH)
    pairs = [("c" * 40, " yes"), ("c" * 29, " ok"), ("c" * 28, " ok"), ("", "x" * 40), ("short", " and")]
    # Context and continuation together (the context's trailing space moves, so the byte total is unchanged);
    # an empty context is scored after the prefix token, which counts as one token of the sequence.
    expected = [dropped_by_hand(len(c) + len(x) + (0 if c else 1), MAX_LENGTH + 1) for c, x in pairs]
    assert expected == [11, 0, 0, 8, 0]
    assert backend.truncated_tokens([LoglikelihoodRequest(c, x) for c, x in pairs]) == expected


def test_generation_counts_prompt_tokens_beyond_the_room(tiny_backend):
    backend = tiny_backend(max_length=MAX_LENGTH)
    requests = [GenerationRequest("p" * n, MAX_NEW) for n in PROMPT_BYTES]
    expected = [dropped_by_hand(n, MAX_LENGTH - MAX_NEW) for n in PROMPT_BYTES]
    assert expected == [22, 12, 0, 0]
    assert backend.truncated_tokens(requests) == expected
    # The count is the rule the generation itself applies: the prompt it keeps is the rest.
    for request, dropped in zip(requests, expected, strict=True):
        assert len(backend.tokens.generation_prompt(request)) == len(request.prompt) - dropped


def test_rolling_perplexity_never_truncates(tiny_backend):
    backend = tiny_backend(max_length=MAX_LENGTH)
    assert backend.truncated_tokens([RollingRequest("r" * 200), RollingRequest("r" * 200, stride=8)]) == [0, 0]


def long_prompt_run(tmp_path, backend):
    (tmp_path / "tasks").mkdir(parents=True)
    (tmp_path / "tasks" / "long.yaml").write_text(GENERATE_TASK)
    docs = [{"text": "p" * n, "answer": "x"} for n in PROMPT_BYTES]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    config = RunConfig(tasks=["long_prompts"], data_dir=tmp_path, tasks_dir=[tmp_path / "tasks"])
    return Evaluation.prepare(config).run_backend(backend)


def test_samples_manifest_and_one_warning_line_per_task(tmp_path, tiny_backend, capsys):
    run = long_prompt_run(tmp_path, tiny_backend(max_length=MAX_LENGTH))
    samples = run.samples["long_prompts"]
    assert samples.truncated_tokens.tolist() == [22, 12, 0, 0]
    notes = run.manifest["tasks"]["long_prompts"]
    assert notes["truncated_documents"] == 2
    assert notes["truncated_tokens"] == 34
    warnings = [line for line in capsys.readouterr().err.splitlines() if "truncated" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "llamabench: warning: task long_prompts: 2 of 4 documents were truncated to the context window "
        "(34 tokens dropped in all); "
    )


def test_nothing_truncated_records_zero_and_warns_nothing(tmp_path, tiny_backend, capsys):
    run = long_prompt_run(tmp_path, tiny_backend(max_length=64))
    assert run.samples["long_prompts"].truncated_tokens.tolist() == [0, 0, 0, 0]
    notes = run.manifest["tasks"]["long_prompts"]
    assert (notes["truncated_documents"], notes["truncated_tokens"]) == (0, 0)
    assert "truncated" not in capsys.readouterr().err


def test_results_from_the_request_cache_still_count_truncation(tmp_path, tiny_backend):
    """Cached results carry no count: the count is recomputed from the request by the backend's tokenizer and
    window (which the cache key holds), so a run served entirely from the cache records the same counts."""
    cache = RequestCache(tmp_path / "cache.sqlite")
    warm = tiny_backend(max_length=MAX_LENGTH, model_fingerprint="tiny")
    first = long_prompt_run(tmp_path / "a", CachedBackend(warm, cache))
    cold = tiny_backend(max_length=MAX_LENGTH, model_fingerprint="tiny")
    calls = []
    cold.generate = lambda requests, on_done=None: calls.append(requests) or []  # must not be asked again
    second = long_prompt_run(tmp_path / "b", CachedBackend(cold, cache))
    assert not calls or not any(calls)
    assert second.samples["long_prompts"].truncated_tokens.tolist() == [22, 12, 0, 0]
    assert first.manifest["tasks"]["long_prompts"]["truncated_tokens"] == 34
    assert second.manifest["tasks"]["long_prompts"]["truncated_tokens"] == 34


class Unknowing(Backend):
    """A backend that does not say what it truncates: the counts are unknown, never a silent 0."""

    model_id = "unknowing"

    def loglikelihood(self, requests, on_done=None):
        raise AssertionError("not used")

    def loglikelihood_rolling(self, requests, on_done=None):
        raise AssertionError("not used")

    def generate(self, requests, on_done=None):
        return ["x" for _ in requests]


def test_a_backend_that_cannot_count_records_unknown_not_zero(tmp_path):
    run = long_prompt_run(tmp_path, Unknowing())
    assert run.samples["long_prompts"].truncated_tokens.isna().all()
    notes = run.manifest["tasks"]["long_prompts"]
    assert notes["truncated_documents"] is None and notes["truncated_tokens"] is None


@pytest.mark.parametrize("max_length", [MAX_LENGTH])
def test_the_count_round_trips_through_the_run_folder(tmp_path, tiny_backend, max_length):
    from llamabench.records.results import read_run, write_run

    run = long_prompt_run(tmp_path, tiny_backend(max_length=max_length))
    folder = write_run(run, tmp_path / "out")
    again = read_run(folder)
    assert again.samples["long_prompts"].truncated_tokens.tolist() == [22, 12, 0, 0]
