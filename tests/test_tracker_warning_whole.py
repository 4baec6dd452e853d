"""A tracker's refusal reaches the user whole: MLflow 3.x refuses a ``file:`` store in one long line whose end says
how to opt out (``MLFLOW_ALLOW_FILE_STORE``), and llamabench's warning once cut it at 300 characters, mid-URL."""

import pytest

from llamabench.errors import first_line

pytest.importorskip("mlflow")


def test_a_long_first_line_is_cut_between_words_and_says_so():
    message = "word " * 70 + "https://example.org/a/long/path/that/must/not/be/cut"
    line = first_line(ValueError(message), limit=320)
    assert line.endswith(" [...]") and len(line) <= 320
    assert line[: -len(" [...]")].split() == message.split()[: len(line[: -len(" [...]")].split())]
    assert first_line(ValueError("short")) == "short"


def test_mlflow_refusing_a_file_store_is_warned_whole(tmp_path, monkeypatch, capsys):
    from llamabench.trackers import Trackers

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    trackers = Trackers(["mlflow"], tmp_path)
    trackers._call("mlflow", lambda tracker: None, "llamabench tiny")  # starting the MLflow run is refused
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("llamabench: warning: --log-to mlflow: not logged (MlflowException: ")
    assert "MLFLOW_ALLOW_FILE_STORE=true" in warning and len(warning.splitlines()) == 1
