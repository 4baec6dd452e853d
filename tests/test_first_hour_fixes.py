"""Defects a newcomer met in the first hour (issue 24), each pinned by a test written before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError

ROOT = Path(__file__).resolve().parents[1]


def test_a_repeatable_flag_given_one_path_as_text_is_refused():
    """`tasks_dir="mine"` would iterate its characters as folders; the flag's list form is required."""
    with pytest.raises(LlamabenchError, match=r"tasks_dir takes a list"):
        RunConfig(tasks=["ppl"], tasks_dir="mine").validate()


METRIC_MODULE = """
from llamabench.metrics import BinaryMetric


class LongAnswer(BinaryMetric):
    "Whether the prediction has more than {words} words."

    name = "long_answer_{words}"
    higher_is_better = True
    scale = "0-1"
    {needs}

    def score(self, outcome):
        return float(len((outcome.prediction or "").split()) > {words})
"""


@pytest.fixture
def own_metrics():
    """The metric registry and the loaded files as they were: the user metrics of a test leave with it."""
    from llamabench.metrics import loading
    from llamabench.metrics.base import REGISTRY

    registered, loaded = dict(REGISTRY), set(loading._LOADED)
    yield
    REGISTRY.clear()
    REGISTRY.update(registered)
    loading._LOADED.clear()
    loading._LOADED.update(loaded)


def test_a_metric_from_the_users_own_module(tmp_path, own_metrics):
    from llamabench.metrics import METRICS
    from llamabench.metrics.loading import load_metric_modules

    module = tmp_path / "my_metrics.py"
    module.write_text(METRIC_MODULE.format(words=3, needs='needs = ("prediction",)'))
    load_metric_modules([module])
    load_metric_modules([module])  # a second run in one process: loaded once
    from llamabench.metrics import Outcome

    outcomes = [Outcome("a", prediction="one two three four"), Outcome("b", prediction="one")]
    assert METRICS["long_answer_3"].stats(outcomes).ravel().tolist() == [1.0, 0.0]


def test_a_metric_missing_a_required_attribute_is_named(tmp_path, own_metrics):
    from llamabench.metrics.loading import load_metric_modules

    module = tmp_path / "bad_metrics.py"
    module.write_text(METRIC_MODULE.format(words=5, needs=""))
    with pytest.raises(LlamabenchError) as caught:
        load_metric_modules([module])
    message = str(caught.value)
    assert "LongAnswer" in message and "'needs'" in message and "bug" not in message


def test_metrics_module_flag_reaches_the_task(tmp_path, own_metrics):
    module = tmp_path / "flag_metrics.py"
    module.write_text(METRIC_MODULE.format(words=7, needs='needs = ("prediction",)'))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text(
        "name: mine\nkind: generate\ndataset: {shipped: squad/dev.first40.jsonl}\n"
        'prompt: "{{ question }}"\ntarget: "{{ answers }}"\nmetrics: [long_answer_7]\n'
    )
    from llamabench.native import prepare_tasks

    config = RunConfig(tasks=["mine"], tasks_dir=[tasks], metrics_module=[module], limit=1).validate()
    assert [task.spec.metrics for task in prepare_tasks(config)] == [("long_answer_7",)]


def test_text_name_collision_explains_the_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a b.txt").write_text("one\n")
    (tmp_path / "a_b.txt").write_text("two\n")
    from llamabench.native import prepare_tasks

    with pytest.raises(LlamabenchError) as caught:
        prepare_tasks(RunConfig(text=["a b.txt", "a_b.txt"]).validate())
    message = str(caught.value)
    assert "text:a_b.txt" in message and "a b.txt" in message and "a_b.txt" in message
    assert "give each --text once" not in message


def test_report_places_runs_with_and_without_a_step(tmp_path):
    """`--model 'out/checkpoint-*' --model base/`: the checkpoints on the step axis, the base run beside them."""
    from builders import make_run

    from llamabench.analysis.report import build_leaderboard, write_report

    runs = [
        make_run("base", {"squad": {"f1": [[10.0], [20.0]]}}, started="2025-01-01T00:00:00+00:00"),
        make_run("out/checkpoint-200", {"squad": {"f1": [[50.0], [70.0]]}}, started="2025-01-02T00:00:00+00:00"),
        make_run("out/checkpoint-100", {"squad": {"f1": [[30.0], [40.0]]}}, started="2025-01-03T00:00:00+00:00"),
    ]
    board = build_leaderboard(runs)
    assert board.x_title == "step"
    assert board.labels == ["base", "out/checkpoint-100", "out/checkpoint-200"]
    assert board.x == [None, 100, 200]
    paths = write_report(runs, tmp_path)
    html = paths[2].read_text()
    assert "base (no step)" in html
    assert "| base |  |" in paths[1].read_text()


def test_hub_model_offline_names_the_network_and_hf_hub_offline(tmp_path):
    """In a process started with HF_HUB_OFFLINE=1, as a user sets it (the hub client reads it when imported)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "llamabench", "run", "--model", "someone/no-such-model", "--tasks", "qa"]
    done = subprocess.run(
        [*command, "--limit", "1", "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "network" in done.stderr and "HF_HUB_OFFLINE" in done.stderr
    assert "check the disk" not in done.stderr


def test_generation_prints_no_library_warnings(tmp_path, monkeypatch):
    from conftest import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "--model", str(model), "--tasks", "qa,bleu", "--limit", "1", "--no-cache"]) == 0
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)] == []


def test_lm_eval_wrapper_runs_on_the_cpu_when_no_gpu_is_visible(tmp_path):
    from conftest import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    (tmp_path / "docs.jsonl").write_text('{"q": "Sky?", "a": "blue"}\n{"q": "Grass?", "a": "green"}\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: tiny_qa
            dataset_path: json
            dataset_kwargs: {{data_files: {{test: {tmp_path / "docs.jsonl"}}}}}
            test_split: test
            output_type: generate_until
            doc_to_text: "Q: {{{{q}}}}\\nA:"
            doc_to_target: "{{{{a}}}}"
            generation_kwargs: {{until: ["\\n"], max_gen_toks: 4, do_sample: false}}
            metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
            """
        )
    )
    command = [sys.executable, "-m", "llamabench.interop.lm_eval.cli", "run", "--model", "llamabench"]
    command += ["--model_args", f"pretrained={model}", "--tasks", "tiny_qa", "--include_path", str(tmp_path / "tasks")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exact_match" in done.stdout and "Traceback" not in done.stderr
