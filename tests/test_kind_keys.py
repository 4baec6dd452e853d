"""Kinds own their keys: a task key that does not apply to the task's kind is refused with one line naming the key,
the kind and the file (before any model loads), and a metric whose needs the kind cannot give is refused at parse
time naming the metric, the kind and the file. Kind facts live on the kinds, not in the runner or scoring."""

import inspect
import json

import pytest
from builders import define_metric

from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS, Outcome
from llamabench.metrics.base import REGISTRY, MeanMetric
from llamabench.tasks import registry
from llamabench.tasks.kinds import KINDS, kind_of
from llamabench.tasks.task_file import TASK_SCHEMA, load_task_file, parse_task

BASE = {
    "loglikelihood_rolling": {"prompt": "{{ text }}", "metrics": ["word_perplexity"]},
    "generate": {"prompt": "{{ q }}", "target": "{{ a }}", "metrics": ["exact_match"]},
    "multiple_choice": {"prompt": "{{ q }}", "choices": "{{ options }}", "label": "{{ answer }}", "metrics": ["acc"]},
}

# Keys that mean nothing to a kind, each with a value of the right type (so only the kind rule can refuse it).
MISPLACED = {
    "generate": {"stride": 8, "units": "{{ q }}", "word_rule": "whitespace_tokens", "choices": "{{ o }}", "label": "0"},
    "multiple_choice": {"target": "{{ a }}", "generation": {"max_new_tokens": 4}, "stride": 8, "units": "{{ q }}"},
    "loglikelihood_rolling": {
        "target": "{{ a }}",
        "choices": "{{ o }}",
        "label": "0",
        "generation": {"max_new_tokens": 4},
        "num_fewshot": 2,
        "fewshot_delimiter": "\n",
        "target_delimiter": ": ",
        "chat_template": True,  # the text is scored as it is: a chat template would be ignored silently
    },
}


def task(kind: str, **extra) -> dict:
    return {"name": "t", "kind": kind, "dataset": {"local": "t.jsonl"}, **BASE[kind], **extra}


@pytest.mark.parametrize(
    ("kind", "key"), [(kind, key) for kind, keys in MISPLACED.items() for key in keys], ids=lambda v: str(v)
)
def test_a_key_of_another_kind_is_refused_naming_key_kind_and_file(kind, key):
    with pytest.raises(LlamabenchError) as caught:
        parse_task(task(kind, **{key: MISPLACED[kind][key]}), "tasks/mine.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("tasks/mine.yaml: ")
    assert f"'{key}'" in message and f"kind '{kind}'" in message


def test_the_issue_example_a_generate_task_with_rolling_and_choice_keys_is_refused():
    raw = task("generate", stride=512, units="{{ q }}", word_rule="whitespace_tokens", choices=["a", "b"])
    with pytest.raises(LlamabenchError) as caught:
        parse_task(raw, "tasks/gen.yaml")
    message = str(caught.value)
    assert message.startswith("tasks/gen.yaml: keys 'choices' (for kind multiple_choice), 'stride' (for kind ")
    assert "'units'" in message and "'word_rule'" in message and "do not apply to kind 'generate'" in message


@pytest.mark.parametrize("kind", list(BASE))
def test_every_kind_accepts_its_own_keys(kind):
    own = {
        "loglikelihood_rolling": {"units": "{{ text }}", "stride": 8, "word_rule": "whitespace_tokens"},
        "generate": {"num_fewshot": 1, "fewshot_delimiter": "\n", "target_delimiter": ": ", "chat_template": True},
        "multiple_choice": {"num_fewshot": 1, "fewshot_delimiter": "\n", "target_delimiter": ": "},
    }[kind]
    common = {"version": 2, "description": "d", "aliases": ["u"], "doc_id": "{{ id }}"}
    assert parse_task(task(kind, **own, **common), "t.yaml").kind == kind


def test_every_kind_key_is_a_schema_key_and_every_schema_key_belongs_somewhere():
    """The schema types every key; the kinds say which apply. A key no kind (and not every task) takes would be
    a key no task could give."""
    from llamabench.tasks.task_file import COMMON_KEYS

    for kind in KINDS.values():
        assert set(kind.keys) <= set(TASK_SCHEMA), kind.name
        assert not set(kind.keys) & set(COMMON_KEYS), kind.name
    assert set(TASK_SCHEMA) == set(COMMON_KEYS).union(*(kind.keys for kind in KINDS.values()))


def test_built_in_tasks_still_parse():
    for path in sorted(registry.builtin_tasks_dir().glob("*.yaml")):
        assert load_task_file(path).name


def test_a_misplaced_key_fails_the_cli_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from llamabench.cli.app import main

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "gen.yaml").write_text(
        "name: gen\nkind: generate\ndataset: {local: t.jsonl}\nprompt: '{{ q }}'\ntarget: '{{ a }}'\n"
        "metrics: [exact_match]\nstride: 256\n"
    )
    (tmp_path / "t.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--tasks", "gen", "--tasks-dir", str(tmp_path / "tasks"), "--data-dir", str(tmp_path)]
    code = main([*args, "--model", str(tmp_path / "no-model"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: "), err
    assert "'stride'" in err and "kind 'generate'" in err and "gen.yaml" in err and "no-model" not in err


def test_every_metric_declares_needs_its_kinds_can_give():
    for name, metric in METRICS.items():
        assert metric.needs, name
        assert any(set(metric.needs) <= set(kind.outcome_fields) for kind in KINDS.values()), name
    for kind in KINDS.values():
        assert set(kind.outcome_fields) <= set(Outcome.__dataclass_fields__), kind.name


@pytest.fixture
def choice_margin():
    """A metric written against choice log-likelihoods: it fits multiple_choice tasks and no other kind."""

    def margin(outcome: Outcome) -> float:
        top, second = sorted(outcome.choice_loglikelihoods, reverse=True)[:2]
        return top - second

    yield define_metric(MeanMetric, "choice_margin", "nats", ("choice_loglikelihoods",), margin)
    REGISTRY.pop("choice_margin")


def test_a_metric_whose_needs_the_kind_cannot_give_is_refused_at_parse_time(choice_margin):
    assert parse_task(task("multiple_choice", metrics=["acc", "choice_margin"]), "mc.yaml").metrics[1] == (
        "choice_margin"
    )
    with pytest.raises(LlamabenchError) as caught:
        parse_task(task("generate", metrics=["exact_match", "choice_margin"]), "tasks/gen.yaml")
    message = str(caught.value)
    assert message.startswith("tasks/gen.yaml: ") and "\n" not in message
    assert "metric 'choice_margin'" in message and "kind 'generate'" in message
    assert "choice_loglikelihoods" in message  # what it needs and the kind lacks


def test_no_kind_facts_in_the_runner_or_scoring():
    """The runner and scoring ask the task's kind; neither names a request type or a kind's outcome field."""
    import llamabench.native
    import llamabench.scoring

    for module in (llamabench.native, llamabench.scoring):
        source = inspect.getsource(module)
        for fact in ("GenerationRequest", "LoglikelihoodRequest", "RollingRequest", "choice_loglikelihoods"):
            assert fact not in source, (module.__name__, fact)


def test_the_generation_room_check_is_the_kind_s():
    from llamabench.tasks.build import build_requests

    spec = parse_task(task("generate", generation={"max_new_tokens": 16}), "t.yaml")
    docs = build_requests(spec, [{"q": "x", "a": "y"}])
    with pytest.raises(LlamabenchError, match="task t: max_new_tokens 16 leaves no room"):
        kind_of(spec).check_fits(spec.name, docs, 16)
    kind_of(spec).check_fits(spec.name, docs, 17)
    rolling = parse_task(task("loglikelihood_rolling"), "t.yaml")
    kind_of(rolling).check_fits(rolling.name, build_requests(rolling, [{"text": "abc"}]), 2)
