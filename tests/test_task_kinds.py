"""Task kinds: each kind's requests, backend call and outcome, worked by hand; results return to their documents."""

import math

import pytest
import yaml

from llamabench.backends.base import Backend
from llamabench.errors import LlamabenchError
from llamabench.metrics import get_metric
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest
from llamabench.tasks.build import build_requests
from llamabench.tasks.kinds import KINDS, run_documents
from llamabench.tasks.task_file import parse_task


class ScriptedBackend(Backend):
    """Answers each call from ``script`` (method name → function of the requests) and records every call."""

    model_id = "scripted"

    def __init__(self, **script):
        self.script = script
        self.calls = []

    def _answer(self, method, requests, on_done):
        self.calls.append((method, list(requests), on_done))
        return self.script[method](requests)

    def loglikelihood(self, requests, on_done=None):
        return self._answer("loglikelihood", requests, on_done)

    def loglikelihood_rolling(self, requests, on_done=None):
        return self._answer("loglikelihood_rolling", requests, on_done)

    def generate(self, requests, on_done=None):
        return self._answer("generate", requests, on_done)


def spec_of(text: str):
    return parse_task(yaml.safe_load(text), "test.yaml")


ROLLING = spec_of("""
name: t_ppl
kind: loglikelihood_rolling
dataset: {local: t.jsonl}
prompt: "{{ text }}"
units: "{{ raw }}"
stride: 64
word_rule: whitespace_tokens
metrics: [word_perplexity]
""")

GENERATE = spec_of("""
name: t_qa
kind: generate
dataset: {local: t.jsonl}
prompt: "Q: {{ q }}\\nA:"
target: "{{ answers }}"
generation: {max_new_tokens: 8, until: ["\\n"]}
metrics: [exact_match]
""")

CHOICE = spec_of("""
name: t_mc
kind: multiple_choice
dataset: {local: t.jsonl}
prompt: "{{ q }}"
choices: "{{ options }}"
label: "{{ answer }}"
metrics: [acc]
""")


def test_rolling_scores_the_text_whole_and_counts_units_on_the_raw_text():
    (doc,) = build_requests(ROLLING, [{"text": "The cat sat.", "raw": " The cat sat. "}])
    kind = KINDS["loglikelihood_rolling"]
    assert doc.requests == [RollingRequest("The cat sat.", 64)]
    backend = ScriptedBackend(loglikelihood_rolling=lambda requests: [(-6.0, 4)])
    (outcome,) = run_documents(backend, ROLLING, [doc])
    assert [method for method, _, _ in backend.calls] == ["loglikelihood_rolling"]
    assert (outcome.loglikelihood, outcome.n_tokens, outcome.units_text) == (-6.0, 4, " The cat sat. ")
    # whitespace_tokens: three words in " The cat sat. ", so exp(6 / 3)
    metric = get_metric("word_perplexity")
    assert metric.aggregate(metric.stats([outcome])) == pytest.approx(math.exp(2.0))
    assert not kind.scorable(build_requests(ROLLING, [{"text": " \n", "raw": ""}])[0])
    assert kind.with_chat_template(doc, "[{}]".format) == doc
    with pytest.raises(LlamabenchError, match="few-shot examples make no sense for kind loglikelihood_rolling"):
        build_requests(ROLLING, [{"text": "a", "raw": "a"}] * 3, num_fewshot=1)


def test_generate_continues_the_prompt_and_predicts_the_generated_text():
    (doc,) = build_requests(GENERATE, [{"q": "Capital of France?", "answers": ["Paris", "paris"]}])
    assert doc.requests == [GenerationRequest("Q: Capital of France?\nA:", 8, ("\n",), True, None)]
    backend = ScriptedBackend(generate=lambda requests: [" Paris"])
    (outcome,) = run_documents(backend, GENERATE, [doc])
    assert [method for method, _, _ in backend.calls] == ["generate"]
    assert (outcome.prediction, outcome.targets) == (" Paris", ["Paris", "paris"])
    assert get_metric("exact_match").stats([outcome]).tolist() == [[100.0]]  # " Paris" normalises to "paris"
    wrapped = KINDS["generate"].with_chat_template(doc, "[{}]".format)
    assert wrapped.prompt == "[Q: Capital of France?\nA:]" and wrapped.requests[0].prompt == wrapped.prompt
    assert KINDS["generate"].gold_answer(GENERATE, {"q": "x", "answers": ["Rome", "rome"]}, "0") == "Rome"


def test_multiple_choice_predicts_the_likeliest_choice():
    (doc,) = build_requests(CHOICE, [{"q": "Sky?", "options": ["red", "blue"], "answer": 1}])
    assert doc.requests == [LoglikelihoodRequest("Sky?", " red"), LoglikelihoodRequest("Sky?", " blue")]
    backend = ScriptedBackend(loglikelihood=lambda requests: [(-4.0, False), (-1.0, True)])
    (outcome,) = run_documents(backend, CHOICE, [doc])
    assert [method for method, _, _ in backend.calls] == ["loglikelihood"]
    assert outcome.choice_loglikelihoods == [-4.0, -1.0]
    assert (outcome.prediction, outcome.label, outcome.targets) == ("blue", 1, ["blue"])
    assert get_metric("acc").stats([outcome]).tolist() == [[1.0]]
    wrapped = KINDS["multiple_choice"].with_chat_template(doc, "[{}]".format)
    assert [r.context for r in wrapped.requests] == ["[Sky?]", "[Sky?]"]


def by_continuation_length(requests):
    """A log-likelihood of minus the continuation's length: each result names the request it answers."""
    return [(-float(len(request.continuation)), False) for request in requests]


TWO_QUESTIONS = [
    {"q": "A?", "options": ["a", "bbb"], "answer": 0},
    {"q": "B?", "options": ["cc", "d", "eeee"], "answer": 1},
]


def test_each_document_gets_its_own_results_from_one_backend_call():
    docs = build_requests(CHOICE, TWO_QUESTIONS)
    backend = ScriptedBackend(loglikelihood=by_continuation_length)

    def marker(indices, results):
        pass

    outcomes = run_documents(backend, CHOICE, docs, on_done=marker)
    # " a", " bbb" | " cc", " d", " eeee" (the target delimiter is one space)
    assert [o.choice_loglikelihoods for o in outcomes] == [[-2.0, -4.0], [-3.0, -2.0, -5.0]]
    assert [o.prediction for o in outcomes] == ["a", "d"]
    ((method, requests, on_done),) = backend.calls
    assert (method, len(requests), on_done) == ("loglikelihood", 5, marker)


@pytest.mark.parametrize("change, returned", [(lambda results: results[:-1], 4), (lambda results: results * 2, 10)])
def test_a_backend_returning_the_wrong_number_of_results_is_an_error(change, returned):
    docs = build_requests(CHOICE, TWO_QUESTIONS)
    backend = ScriptedBackend(loglikelihood=lambda requests: change(by_continuation_length(requests)))
    with pytest.raises(
        LlamabenchError, match=f"task t_mc: backend scripted returned {returned} results for 5 requests"
    ):
        run_documents(backend, CHOICE, docs)


def test_task_validation_lists_the_registered_kinds():
    assert list(KINDS) == ["loglikelihood_rolling", "generate", "multiple_choice"]
    raw = yaml.safe_load("name: t\nkind: [generate]\ndataset: {local: t.jsonl}\nprompt: x\nmetrics: [f1]")
    with pytest.raises(LlamabenchError, match="kind must be one of loglikelihood_rolling, generate, multiple_choice"):
        parse_task(raw, "test.yaml")
    with pytest.raises(LlamabenchError, match="kind 'multiple_choice' needs the key 'choices'"):
        parse_task({**raw, "kind": "multiple_choice", "metrics": ["acc"]}, "test.yaml")
