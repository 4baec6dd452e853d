"""Document values are used as written: no guessing, no coercion; nulls, NaNs, empty answers, single choices and
ambiguous labels are errors naming the document."""

import pytest
from builders import PPL_TASK, QA_TASK, spec_of, task_dict, write_run_workspace

from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.native import prepare_tasks
from llamabench.tasks import registry
from llamabench.tasks.build import build_requests
from llamabench.tasks.task_file import parse_task
from llamabench.tasks.templates import render_list


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return write_run_workspace(tmp_path, monkeypatch)


MC_TASK = task_dict(
    "mc", "multiple_choice", "x.jsonl", ["acc"], prompt="{{ q }}", choices="{{ options }}", label="{{ answer }}"
)


def test_text_that_looks_like_a_list_stays_one_string():
    assert render_list("{{ t }}", {"t": "[1, 2]"}) == ["[1, 2]"]
    assert render_list("{{ t }}", {"t": "[Applause]"}) == ["[Applause]"]
    with pytest.raises(TypeError, match="prints a list as text"):  # never a Python spelling in a prompt
        render_list("Answer: {{ a }}", {"a": ["x", "y"]})


def test_lists_come_from_list_valued_fields_and_yaml_lists():
    assert render_list("{{ answers }}", {"answers": ["Paris", "paris"]}) == ["Paris", "paris"]
    assert render_list("{{ a.text }}", {"a": {"text": ["x", 1984]}}) == ["x", "1984"]
    assert render_list(["{{ a }}", "{{ b }}"], {"a": "[1]", "b": "c"}) == ["[1]", "c"]


def test_bracketed_targets_are_scored_as_written():
    spec = spec_of(QA_TASK)
    docs = [{"question": "q", "answer": "[Applause]"}, {"question": "q", "answer": "[1, 2]"}]
    assert [doc.targets for doc in build_requests(spec, docs)] == [["[Applause]"], ["[1, 2]"]]


@pytest.mark.parametrize(
    ("task", "doc", "message"),
    [
        (QA_TASK, {"question": "q", "answer": None}, "null value"),
        (QA_TASK, {"question": None, "answer": "a"}, "null value"),
        (QA_TASK, {"question": "q", "answer": ""}, "empty gold answer"),
        (QA_TASK, {"question": "q", "answer": []}, "no gold answer"),
        (QA_TASK, {"question": "q", "answer": ["a", None]}, "null value"),
        (PPL_TASK, {"text": None}, "null value"),
    ],
)
def test_null_and_empty_values_are_errors_naming_the_document(task, doc, message):
    with pytest.raises(LlamabenchError, match=message) as caught:
        build_requests(spec_of(task), [{"question": "q", "answer": "a", "text": "t"}, doc])
    assert "document 1" in str(caught.value)


@pytest.mark.parametrize(
    ("template", "doc"),
    [
        ("{{ s | join(', ') }}", {"s": ["a", None]}),
        ("{{ s | trim }}", {"s": None}),
        ("Q: {{ s ~ '?' }}", {"s": None}),
        ("{{ s | lower }}", {"s": None}),
        ("{{ s }}", {"s": float("nan")}),
    ],
)
def test_nulls_and_nans_never_become_text_through_filters(template, doc):
    from llamabench.tasks.templates import NullValueError

    with pytest.raises(NullValueError):
        render_list(template, doc)


def test_defaults_for_nulls_and_containers_printed_as_text():
    assert render_list("{{ s or '' }}", {"s": None}) == [""]
    for value in ({"text": ["a"]}, ["a"]):
        with pytest.raises(TypeError, match="as text"):
            render_list("{{ v }}\n", {"v": value})  # text around the field: a container would be printed


def test_single_choice_question_is_refused():
    spec = parse_task(MC_TASK, "mc.yaml")
    with pytest.raises(LlamabenchError, match="at least two non-empty choices"):
        build_requests(spec, [{"q": "q", "options": ["only"], "answer": 0}])
    assert [d.choices for d in build_requests(spec, [{"q": "q", "options": ["a", "b"], "answer": 1}])] == [["a", "b"]]


def test_a_label_that_is_both_an_index_and_another_choices_text_is_refused():
    spec = parse_task(MC_TASK, "mc.yaml")
    with pytest.raises(LlamabenchError, match="both choice number 3"):
        build_requests(spec, [{"q": "1+2?", "options": ["2", "3", "4", "1"], "answer": "3"}])
    (doc,) = build_requests(spec, [{"q": "1+2?", "options": ["two", "three"], "answer": "three"}])
    assert doc.label == 1


def test_an_empty_generation_prompt_is_refused():
    with pytest.raises(LlamabenchError, match="empty prompt"):
        build_requests(spec_of(QA_TASK, prompt="{{ question }}"), [{"question": "", "answer": "a"}])


def test_all_empty_perplexity_task_fails_before_the_model_loads(workspace):
    (workspace / "texts.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    config = RunConfig(tasks=["tiny_ppl"], tasks_dir=[workspace / "tasks"], data_dir=workspace)
    with pytest.raises(LlamabenchError, match="all 2 documents are empty"):
        prepare_tasks(config)


def test_squad_target_reads_both_the_local_list_and_the_hub_mapping():
    spec = registry.resolve(["squad"], registry.task_dirs())[0]
    local = {"id": "1", "context": "c", "question": "q", "answers": ["Denver Broncos", "Broncos"]}
    hub = {**local, "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [177, 184]}}
    assert build_requests(spec, [local], num_fewshot=0)[0].targets == ["Denver Broncos", "Broncos"]
    assert build_requests(spec, [hub], num_fewshot=0)[0].targets == ["Denver Broncos", "Broncos"]
