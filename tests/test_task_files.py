"""Task YAML files as users write them: typed keys, duplicate metrics, `.yml` files, one broken file among many,
and text that aliases or templates multiply past what a task file may hold."""

import json
from pathlib import Path

import pytest
from builders import cli_error, task_dict

from llamabench.errors import LlamabenchError
from llamabench.tasks.task_file import MAX_TASK_FILE_BYTES, MAX_TASK_NODES, load_task_file

GOOD = (
    "name: {name}\nkind: loglikelihood_rolling\ndataset: {{local: docs.jsonl}}\nprompt: '{{{{ text }}}}'\n"
    "metrics: [word_perplexity]\n"
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a b", "c d"]))
    (tmp_path / "tasks").mkdir()
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run_args(workspace: Path, tasks: str) -> list[str]:
    """`run` arguments with a model that does not exist: an error about it means the task checks passed."""
    return [
        "run",
        "--tasks",
        tasks,
        "--tasks-dir",
        str(workspace / "tasks"),
        "--data-dir",
        str(workspace / "data"),
        "--model",
        str(workspace / "no-such-model"),
        "--output-dir",
        str(workspace / "out"),
    ]


BASE = task_dict("t", "generate", "docs.jsonl", ["exact_match"], prompt="{{ text }}", target="{{ text }}")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("metrics",), 5, "a list"),
        (("metrics",), [5], "text"),
        (("dataset",), "docs.jsonl", "a mapping"),
        (("dataset", "local"), 5, "text"),
        (("dataset", "local"), ["a", "b"], "text"),
        (("dataset", "hub"), "org/ds", "a mapping"),
        (("dataset", "hub", "path"), 7, "text"),
        (("dataset", "hub", "split"), ["test"], "text"),
        (("dataset", "format"), 1, "text"),
        (("generation",), "greedy", "a mapping"),
        (("generation", "until"), [1], "text"),
        (("aliases",), {"a": 1}, "text"),
        (("name",), 12, "text"),
        (("kind",), ["generate"], "one of"),
        (("word_rule",), 3, "text"),
        (("doc_id",), ["x"], "text"),
        (("num_fewshot",), "2", "a whole number"),
    ],
)
def test_every_key_of_the_wrong_type_is_one_line_naming_file_key_found_and_expected(tmp_path, path, value, expected):
    raw = json.loads(json.dumps(BASE))
    holder = raw
    for key in path[:-1]:
        holder = holder.setdefault(key, {})
    holder[path[-1]] = value
    file = tmp_path / "t.yaml"
    file.write_text(json.dumps(raw))  # JSON is YAML
    with pytest.raises(LlamabenchError) as info:
        load_task_file(file)
    message = str(info.value)
    assert "\n" not in message
    assert str(file) in message and ".".join(path) in message and expected in message, message
    assert type(value).__name__ in message  # what was found


def test_wrongly_typed_keys_through_the_cli_are_one_line_not_an_unexpected_bug(capsys, workspace):
    for line in ["metrics: 5", "dataset: {local: 5}", "dataset: {local: docs.jsonl, hub: org/ds}"]:
        text = GOOD.format(name="t")
        key = line.split(":")[0]
        kept = [row for row in text.splitlines() if not row.startswith(key + ":")]
        (workspace / "tasks" / "t.yaml").write_text("\n".join([*kept, line]) + "\n")
        err = cli_error(capsys, *run_args(workspace, "t"))
        assert "unexpected" not in err and "t.yaml" in err and key in err, err


def test_a_text_key_holding_a_lone_surrogate_is_refused(tmp_path):
    file = tmp_path / "t.yaml"
    file.write_text(GOOD.format(name="t").replace("'{{ text }}'", '"{{ text }}\\ud800"'))
    with pytest.raises(LlamabenchError, match="prompt"):
        load_task_file(file)


def test_a_metric_named_twice_is_refused_naming_the_file_and_the_metric(tmp_path):
    file = tmp_path / "t.yaml"
    metrics = "[word_perplexity, bits_per_byte, word_perplexity]"
    file.write_text(GOOD.format(name="t").replace("[word_perplexity]", metrics))
    with pytest.raises(LlamabenchError) as info:
        load_task_file(file)
    assert str(file) in str(info.value) and "word_perplexity" in str(info.value) and "twice" in str(info.value)


def test_yml_task_files_are_read_like_yaml_ones(capsys, workspace):
    (workspace / "tasks" / "short.yml").write_text(GOOD.format(name="short"))
    err = cli_error(capsys, *run_args(workspace, "short"))
    assert "unknown task" not in err and "no-such-model" in err, err  # the task was found; the model was next


def test_a_broken_task_file_does_not_block_other_tasks_but_warns(capsys, workspace):
    (workspace / "tasks" / "good.yaml").write_text(GOOD.format(name="good"))
    (workspace / "tasks" / "broken.yaml").write_text("name: broken\nkind: [unclosed\n")
    from llamabench.cli.app import main

    capsys.readouterr()
    assert main(run_args(workspace, "good")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("llamabench: warning: ") and "broken.yaml" in line for line in lines), lines
    assert lines[-1].startswith("llamabench: error: ") and "no-such-model" in lines[-1], lines  # the model was next
    # Asking for the broken task itself (or a name no file defines) is the error, naming the file.
    assert "broken.yaml" in cli_error(capsys, *run_args(workspace, "broken"))
    assert "broken.yaml" in cli_error(capsys, *run_args(workspace, "nobody"))
    # The task list shows the good task and warns about the broken file.
    assert main(["tasks", "--tasks-dir", str(workspace / "tasks")]) == 0
    captured = capsys.readouterr()
    assert "good" in captured.out and "broken.yaml" in captured.err


def test_a_broken_file_whose_name_key_still_reads_blocks_only_that_name(capsys, workspace):
    (workspace / "tasks" / "good.yaml").write_text(GOOD.format(name="good"))
    (workspace / "tasks" / "x.yaml").write_text(GOOD.format(name="other").replace("word_perplexity", "bleu_typo"))
    assert "x.yaml" in cli_error(capsys, *run_args(workspace, "other"))
    from llamabench.cli.app import main

    assert main(run_args(workspace, "good")) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("llamabench: warning: ") and "x.yaml" in warning
    assert error.startswith("llamabench: error: ") and "no-such-model" in error


def test_aliases_of_long_strings_within_the_node_and_byte_limits_are_refused(tmp_path):
    """The shape of the report: a small file, far under 1 MiB and 100,000 values, whose aliases repeat a long
    string into gigabytes of targets."""
    long = "x" * 4000
    rows = ", ".join(["*s"] * 20_000)
    text = GOOD.format(name="t").replace("[word_perplexity]", "[word_perplexity]\nunits: &s " + long)
    text = text.replace("kind: loglikelihood_rolling", "kind: generate").replace("[word_perplexity]", "[exact_match]")
    text = text.replace("units: &s", "description: &s") + f"target: [{rows}]\n"
    file = tmp_path / "t.yaml"
    file.write_text(text)
    assert file.stat().st_size < MAX_TASK_FILE_BYTES and text.count("*s") < MAX_TASK_NODES
    with pytest.raises(LlamabenchError) as info:
        load_task_file(file)
    assert str(file) in str(info.value) and "expand" in str(info.value)


def test_a_template_that_multiplies_text_is_refused_naming_the_task_and_document():
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    for prompt in [
        "{{ text * 100000000 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ text }}{% endfor %}{% endfor %}",
        # Found by attacking the bound: one step that builds the text before any streaming check sees it.
        "{{ text.center(10 ** 10) }}",
        "{{ '%*s' % (10 ** 10, text) }}",
        "{{ '{:>10000000000}'.format(text) }}",
        "{{ text | center(10 ** 10) }}",
        "{{ text | indent(10 ** 10) }}",
        "{{ '%*s' | format(10 ** 10, text) }}",
        "{{ text.replace('a', text * 1000).replace('a', text * 1000).replace('a', text * 1000) }}",
        "{{ text | replace('', text) | replace('', text) | replace('', text) }}",
    ]:
        spec = parse_task({**BASE, "prompt": prompt}, "t.yaml")
        with pytest.raises(LlamabenchError) as info:
            build_requests(spec, [{"text": "a" * 100}, {"text": "b"}])
        assert "task t" in str(info.value) and "document 0" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "prompt",
    [
        # Loops that print nothing: no text bound sees them, so a time bound per document stops them.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ text }}",
        "{% for a in text %}{% for b in text %}{% for c in text %}{% endfor %}{% endfor %}{% endfor %}{{ text }}",
    ],
)
def test_a_template_that_works_without_printing_is_stopped_naming_the_task_and_document(monkeypatch, prompt):
    import time

    from llamabench.tasks import templates
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.5)
    spec = parse_task({**BASE, "prompt": prompt}, "t.yaml")
    start = time.monotonic()
    with pytest.raises(LlamabenchError, match=r"task t: document 0: its templates ran for more than 0.5 s"):
        build_requests(spec, [{"text": "a" * 3000}, {"text": "b"}])
    assert time.monotonic() - start < 10


def test_a_few_shot_delimiter_that_multiplies_text_is_refused():
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    spec = parse_task({**BASE, "fewshot_delimiter": "d" * 500_000, "num_fewshot": 50}, "t.yaml")
    docs = [{"text": str(i)} for i in range(60)]
    with pytest.raises(LlamabenchError, match="task t"):
        build_requests(spec, docs)


def test_ordinary_long_documents_and_few_shot_prompts_still_render():
    """The bound scales with the data: a 3 MB document and a 25-shot prompt are fine."""
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    spec = parse_task({**BASE, "prompt": "Q: {{ text }}\nA:"}, "t.yaml")
    (built,) = build_requests(spec, [{"text": "w " * 1_500_000}])
    assert len(built.prompt) == 3_000_006
    docs = [{"text": f"question {i} " * 50} for i in range(30)]
    assert len(build_requests(spec, docs, num_fewshot=25)) == 30
    # Large numbers in the data or the text are not widths.
    prompt = "{{ '%d in 2024000000' % n }} {{ '{} of 3000000000 {:>3}'.format(n, text) }}"
    spec = parse_task({**BASE, "prompt": prompt}, "t")
    (built,) = build_requests(spec, [{"text": "ab", "n": 5_000_000_000}])
    assert built.prompt == "5000000000 in 2024000000 5000000000 of 3000000000  ab"


def test_a_key_written_twice_is_refused_but_a_merge_may_override(tmp_path):
    file = tmp_path / "t.yaml"
    file.write_text(GOOD.format(name="t") + "prompt: '{{ other }}'\n")
    with pytest.raises(LlamabenchError, match=r"key 'prompt' given twice \(line 6\)"):
        load_task_file(file)
    file.write_text("base: &b {max_new_tokens: 5, greedy: true}\n")  # a merge, then one key of it overridden
    raw = "name: t\nkind: generate\ndataset: {local: d.jsonl}\nprompt: x\ntarget: y\nmetrics: [exact_match]\n"
    file.write_text(raw + "generation: {<<: {max_new_tokens: 5, greedy: true}, max_new_tokens: 7}\n")
    assert load_task_file(file).generation.max_new_tokens == 7


def test_keys_that_are_not_text_are_named_as_unknown(tmp_path):
    file = tmp_path / "t.yaml"
    file.write_text(GOOD.format(name="t") + "1: x\n~: y\n")
    with pytest.raises(LlamabenchError, match="unknown key"):
        load_task_file(file)


def test_a_template_rendering_a_lone_surrogate_is_refused_before_the_model_loads():
    """Found by attacking the data check: a Jinja string literal's escape makes the surrogate, not the data."""
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    spec = parse_task({**BASE, "prompt": '{{ text }}{{ "\\ud800" }}'}, "t.yaml")
    with pytest.raises(LlamabenchError, match="task t: a template fails on document 0.*lone surrogate"):
        build_requests(spec, [{"text": "a"}])


def test_task_file_suffixes_in_any_case_are_read_and_a_missing_tasks_folder_gives_none(tmp_path):
    from llamabench.tasks import registry

    (tmp_path / "upper.YML").write_text(GOOD.format(name="upper"))
    (tmp_path / "notes.txt").write_text("not a task")
    assert sorted(registry.discover([tmp_path, tmp_path / "missing"])) == ["upper"]
