"""What a run asks of a checkpoint is refused before its weights load (exit 2, one line naming the task, the model
and the fix): a chat template the tokenizer lacks, max_new_tokens that fill the model's context, generation
settings no engine path honours; and, for a model already loaded, before any task's requests run."""

import json

import pytest
from builders import GOOD_TASK
from conftest import save_tiny_model

from llamabench.cli.app import main

TASK = GOOD_TASK + "generation: {max_new_tokens: 4}\n"


@pytest.fixture
def workspace(tmp_path, notes_file):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(TASK)
    (tmp_path / "data" / "tiny" / "qa.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    save_tiny_model(tmp_path / "model")  # 256 positions, no chat template
    return tmp_path


def run_cli(capsys, workspace, *args) -> str:
    argv = ["run", "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace / "data")]
    argv += ["--output-dir", str(workspace / "out"), "--model", str(workspace / "model"), "--no-cache", *args]
    capsys.readouterr()  # the fixture's model-saving progress bar
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: "), err
    return err


def evaluate_workspace(workspace, notes_file):
    """``evaluate_checkpoint`` of the workspace's model on tiny_qa and the notes file (on the CPU, no cache)."""
    from llamabench.pipeline import evaluate_checkpoint

    return evaluate_checkpoint(
        str(workspace / "model"),
        ["tiny_qa"],
        text=[str(notes_file)],
        tasks_dir=[workspace / "tasks"],
        data_dir=workspace / "data",
        no_cache=True,
        device="cpu",
    )


@pytest.fixture
def no_loading(monkeypatch):
    """Loading weights fails the test: the refusal must come first."""
    import llamabench.backends.hf.backend as hf

    def load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the run was refused")

    monkeypatch.setattr(hf, "load_model_and_tokenizer", load)


def test_missing_chat_template_is_refused_before_the_weights_load(capsys, workspace, no_loading):
    (workspace / "tasks" / "tiny_qa.yaml").write_text(TASK + "chat_template: true\n")
    err = run_cli(capsys, workspace, "--tasks", "tiny_qa")
    assert "task tiny_qa" in err and "model model has none" in err and "chat_template: false" in err


def test_a_chat_template_file_is_found(workspace):
    from llamabench.preflight import has_chat_template

    assert not has_chat_template(workspace / "model")
    (workspace / "model" / "chat_template.jinja").write_text("{{ messages[0].content }}")
    assert has_chat_template(workspace / "model")


@pytest.mark.parametrize("max_new", [256, 300])
def test_max_new_tokens_filling_the_models_context_is_refused_before_the_weights_load(
    capsys, workspace, no_loading, max_new
):
    (workspace / "tasks" / "tiny_qa.yaml").write_text(TASK.replace("max_new_tokens: 4", f"max_new_tokens: {max_new}"))
    err = run_cli(capsys, workspace, "--tasks", "tiny_qa")
    assert f"task tiny_qa: max_new_tokens {max_new}" in err and "256-token context of model model" in err
    assert "lower the task's generation.max_new_tokens" in err


def test_refused_generation_setting_is_refused_before_the_weights_load(capsys, workspace, no_loading):
    path = workspace / "model" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_beams": 4}))
    err = run_cli(capsys, workspace, "--tasks", "tiny_qa")
    assert "task tiny_qa: model model's generation_config.json sets num_beams=4" in err


def test_a_refused_setting_stops_a_loaded_model_before_any_task_runs(workspace, notes_file, monkeypatch):
    """A scoring task listed first computes nothing when a later generation task is refused."""
    from llamabench.backends.hf.backend import HFBackend
    from llamabench.errors import LlamabenchError

    path = workspace / "model" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "penalty_alpha": 0.5, "top_k": 4}))
    calls = []
    monkeypatch.setattr(HFBackend, "loglikelihood_rolling", lambda self, *a, **k: calls.append(1))
    with pytest.raises(LlamabenchError, match="task tiny_qa: .*penalty_alpha=0.5"):
        evaluate_workspace(workspace, notes_file)
    assert calls == []


def test_without_refused_settings_the_run_goes_through(capsys, workspace):
    path = workspace / "model" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "repetition_penalty": 1.3, "top_k": 4}))
    argv = ["run", "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace / "data")]
    argv += ["--output-dir", str(workspace / "out"), "--model", str(workspace / "model"), "--no-cache"]
    assert main([*argv, "--tasks", "tiny_qa", "--device", "cpu"]) == 0


def test_generation_settings_make_generation_runs_incomparable_and_leave_scoring_comparable(workspace, notes_file):
    """The same weights with and without a repetition penalty in generation_config.json: ``check`` must refuse
    to compare the generation task, and may compare the perplexity task."""
    from llamabench.records.comparability import differences

    def settings() -> dict:
        run = evaluate_workspace(workspace, notes_file)
        return {task: notes["settings"] for task, notes in run.manifest["tasks"].items()}

    plain = settings()
    path = workspace / "model" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "repetition_penalty": 1.3}))
    penalised = settings()
    assert differences(plain["tiny_qa"], penalised["tiny_qa"]) == [
        "generation_settings None vs {'repetition_penalty': 1.3}"
    ]
    (scoring,) = set(plain) - {"tiny_qa"}  # the --text task
    assert differences(plain[scoring], penalised[scoring]) == []


def test_evaluate_checkpoint_refuses_before_the_weights_load_with_runs_line(capsys, workspace, notes_file, no_loading):
    from llamabench.errors import LlamabenchError

    (workspace / "tasks" / "tiny_qa.yaml").write_text(TASK + "chat_template: true\n")
    err = run_cli(capsys, workspace, "--tasks", "tiny_qa", "--text", str(notes_file), "--device", "cpu")
    with pytest.raises(LlamabenchError) as refused:
        evaluate_workspace(workspace, notes_file)
    assert err == f"llamabench: error: {refused.value}"


def test_watch_refuses_a_checkpoint_before_its_weights_load_with_runs_line(capsys, workspace, notes_file, no_loading):
    (workspace / "tasks" / "tiny_qa.yaml").write_text(TASK + "chat_template: true\n")
    err = run_cli(capsys, workspace, "--tasks", "tiny_qa", "--device", "cpu")
    root = workspace / "train"
    root.mkdir()
    (workspace / "model").rename(root / "checkpoint-100")
    argv = ["watch", str(root), "--tasks", "tiny_qa", "--tasks-dir", str(workspace / "tasks"), "--no-cache"]
    argv += ["--data-dir", str(workspace / "data"), "--device", "cpu", "--output-dir", str(workspace / "runs")]
    main([*argv, "--out", str(workspace / "reports"), "--once", "--every", "0.05"])
    refused = err.removeprefix("llamabench: error: ").replace("model model", "model checkpoint-100")
    assert any(refused in line for line in capsys.readouterr().err.splitlines()), refused
