"""The CLI boundary: usage errors, environment faults and a failing cache give one line (or a warning), never a
traceback, and never lose finished work."""

import json
import sqlite3

import pytest
from conftest import save_tiny_model

from llamabench.backends.cache import CachedBackend, RequestCache
from llamabench.cli import main
from llamabench.requests import RollingRequest

PPL_TASK = """\
name: tiny_ppl
kind: loglikelihood_rolling
dataset: {local: texts.jsonl}
prompt: "{{ text }}"
metrics: [token_perplexity]
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_ppl.yaml").write_text(PPL_TASK)
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
        (["run", "--tasks", "ppl", "--batch-size", "0"], "argument --batch-size: '0' is not 'auto'"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["check", "--baseline", "a"], "the following arguments are required: --candidate"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, named):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and named in one_error_line(capsys)


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
    backend = tiny_backend()
    backend.fingerprint = "tiny"
    cache = RequestCache(tmp_path / "requests.sqlite")
    cache._db = _FullDisk(cache._db)
    requests = [RollingRequest("one text"), RollingRequest("another text")]
    cached = CachedBackend(backend, cache, chunk_chars=4)
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
