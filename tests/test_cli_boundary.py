"""The CLI boundary: usage errors, environment faults and a failing cache give one line (or a warning), never a
traceback, and never lose finished work."""

import json
import sqlite3

import pytest
from builders import TOKEN_PPL_TASK
from conftest import save_tiny_model

from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.cli.app import main
from llamabench.requests import RollingRequest


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_ppl.yaml").write_text(TOKEN_PPL_TASK)
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "The cat sat on the mat."}) + "\n")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run_args(workspace, *extra):
    return ["run", "--tasks", "tiny_ppl", "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace)] + [
        "--output-dir",
        str(workspace / "out"),
        *extra,
    ]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "--tasks", "ppl", "--limit", "x"], "argument --limit: invalid int value: 'x'"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["check", "--baseline", "a"], "the following arguments are required: --candidate"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, named):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and named in one_error_line(capsys)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_batch_size_that_is_not_auto_or_positive_is_one_line_naming_the_flag(capsys, value):
    assert main(["run", "--tasks", "ppl", "--batch-size", value]) == 2
    assert f"--batch-size {value} must be 'auto' or a positive whole number" in one_error_line(capsys)


@pytest.mark.parametrize("tasks", ["", ",", " , "])
def test_a_task_list_that_names_nothing_is_refused(workspace, capsys, tasks):
    assert main(["run", "--tasks", tasks, "--model", str(workspace / "no-model")]) == 2
    assert "nothing to run" in one_error_line(capsys)


def test_unknown_device_is_one_line_before_the_model_loads(workspace, capsys):
    assert main(run_args(workspace, "--model", str(workspace / "no-model"), "--device", "bogus")) == 2
    line = one_error_line(capsys)
    assert "--device bogus is not a device" in line and "no-model" not in line


def test_corrupt_request_cache_fails_before_the_model_loads(workspace, capsys):
    (workspace / "cache").mkdir()
    (workspace / "cache" / "requests.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    assert main(run_args(workspace, "--model", str(workspace / "no-model"))) == 2
    line = one_error_line(capsys)
    assert "requests.sqlite" in line and "--no-cache" in line and "no-model" not in line


class _FullDisk:
    """An SQLite connection whose writes fail as they do on a full disk."""

    def __init__(self, real: sqlite3.Connection):
        self.real = real

    def execute(self, *args):
        return self.real.execute(*args)

    def executemany(self, *args):
        raise sqlite3.OperationalError("database or disk is full")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_cache_whose_disk_fills_warns_and_the_run_goes_on(tiny_backend, tmp_path, capsys):
    backend = tiny_backend(batch_size=1)  # two batches: the second store is not tried after the first fails
    backend.fingerprint = "tiny"
    cache = RequestCache(tmp_path / "requests.sqlite")
    cache._db = _FullDisk(cache._db)
    requests = [RollingRequest("one text"), RollingRequest("another text")]
    cached = CachedBackend(backend, cache)
    got, expected = cached.loglikelihood_rolling(requests), tiny_backend(batch_size=1).loglikelihood_rolling(requests)
    assert [n for _, n in got] == [n for _, n in expected]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], rel=1e-6)
    err = capsys.readouterr().err
    assert err.count("cannot store results") == 1 and "continues without caching" in err
    assert cached.describe()["cache"]["stored"] is False


def test_cli_run_end_to_end_still_writes_with_a_fingerprinted_model(workspace, capsys):
    model = save_tiny_model(workspace / "m")
    assert main(run_args(workspace, "--model", str(model), "--device", "cpu")) == 0
    assert "token_perplexity" in capsys.readouterr().out


def test_a_metric_that_does_not_fit_the_task_kind_fails_before_the_model_loads(workspace, capsys):
    task = TOKEN_PPL_TASK.replace("[token_perplexity]", "[token_perplexity, bleu]")
    (workspace / "tasks" / "tiny_ppl.yaml").write_text(task)
    assert main(run_args(workspace, "--model", str(workspace / "no-model"))) == 2
    line = one_error_line(capsys)
    assert "metric 'bleu' scores generate tasks, not kind 'loglikelihood_rolling'" in line and "no-model" not in line


def test_an_unsupported_gguf_architecture_is_not_called_corrupt(tmp_path):
    import gguf
    import numpy as np

    from llamabench.backends.loading.gguf import write_dense_copy
    from llamabench.backends.loading.model_source import ModelSource
    from llamabench.errors import LlamabenchError

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), arch="notallama")
    writer.add_tensor("t", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LlamabenchError) as error:
        write_dense_copy(ModelSource("m", str(tmp_path), "m.gguf"), tmp_path / "dense")
    assert "architecture notallama is not supported" in str(error.value) and "corrupt" not in str(error.value)


def test_a_folder_with_two_gguf_files_says_so(tmp_path):
    from llamabench.backends.loading.model_source import resolve_model
    from llamabench.errors import LlamabenchError

    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(LlamabenchError, match=r"holds 2 .gguf files \(a.gguf, b.gguf\); pass the one to evaluate"):
        resolve_model(str(tmp_path))


def test_an_unexpected_failure_is_one_line_with_the_debug_hint(workspace, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("something nobody anticipated")

    monkeypatch.setattr("llamabench.pipeline.prepare_tasks", broken)
    assert main(run_args(workspace)) == 2
    line = one_error_line(capsys)
    assert "unexpected TypeError: something nobody anticipated" in line and "--debug" in line
    with pytest.raises(TypeError):
        main(["--debug", *run_args(workspace)])


def test_a_missing_chat_template_fails_before_any_task_runs(workspace, tiny_backend):
    from llamabench.config import RunConfig
    from llamabench.errors import LlamabenchError
    from llamabench.pipeline import Evaluation

    qa = "name: tiny_qa\nkind: generate\ndataset: {local: qa.jsonl}\nprompt: '{{ q }}'\ntarget: '{{ a }}'\n"
    (workspace / "tasks" / "tiny_qa.yaml").write_text(qa + "metrics: [exact_match]\nchat_template: true\n")
    (workspace / "qa.jsonl").write_text(json.dumps({"q": "2+2?", "a": "4"}) + "\n")
    config = RunConfig(tasks=["tiny_ppl", "tiny_qa"], tasks_dir=[workspace / "tasks"], data_dir=workspace)
    backend = tiny_backend()
    backend.loglikelihood_rolling = lambda requests: pytest.fail("the first task ran before the second failed")
    with pytest.raises(LlamabenchError, match="has no chat template"):
        Evaluation.prepare(config).run_backend(backend)


def test_a_very_long_model_name_gives_a_run_folder_that_fits(tmp_path):
    import pandas as pd

    from llamabench.records.results import RunResult, results_frame, write_run

    manifest = {"model": "m" * 300, "run_id": "r", "started": "2026-01-01"}
    run = RunResult(results_frame([]), {"t": pd.DataFrame({"doc_id": ["1"]})}, manifest)
    assert len(write_run(run, tmp_path).name) < 100


def test_an_error_line_is_one_write_so_ranks_sharing_stderr_do_not_interleave(monkeypatch, tmp_path):
    # Under torchrun every rank prints the same error to one stderr; with PYTHONUNBUFFERED a print() is two
    # writes (text, then newline), and two ranks' lines came out as "line1line2\n\n".
    import io
    import sys

    from llamabench.cli.app import main

    class Recorder(io.StringIO):
        writes: list[str] = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Recorder())
    assert main(["runs", "--output-dir", str(tmp_path), "--results-dir", str(tmp_path / "other")]) == 2
    assert len(Recorder.writes) == 1 and Recorder.writes[0].endswith(
        "name two folders; give --output-dir only (--results-dir is its old name)\n"
    )
