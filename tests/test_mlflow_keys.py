"""Task names MLflow refuses as key text (``mc+x``) are logged under keys it takes, one per name, with the original
name in a tag: against MLflow's own validator and a real MLflow tracking server on 127.0.0.1."""

import pytest
from test_trackers import start_mlflow_server, stop

from llamabench.trackers.base import TrackedRun
from llamabench.trackers.mlflow import NAME_TAG, MlflowTracker, mlflow_key

NASTY = ["mc+x/acc", "mc+x/acc_stderr", "mc x/acc", "mc_x/acc", "a//b", "./a", "a/..", "/lead", "trail/", "q?&=/f1"]
NASTY += ["lm_eval:hellaswag/acc", "text:notes.txt/word_perplexity", "é/acc", "x" * 300 + "/acc", "mc*x/acc"]


def test_every_key_is_one_mlflow_takes_and_no_two_names_share_one():
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    keys = [mlflow_key(name) for name in NASTY]
    for key in keys:
        _validate_metric_name(key)  # raises MlflowException on a key the server would refuse
        _validate_param_name(key)
        assert len(key) <= 250
    assert len(set(keys)) == len(NASTY)
    # Names MLflow takes as they are keep their names.
    for name in ["lm_eval:hellaswag/acc", "text:notes.txt/word_perplexity", "mc_x/acc", "é/acc"]:
        assert mlflow_key(name) == name
    # A renamed task keeps one prefix for all its figures, so they group together.
    assert mlflow_key("mc+x/acc").split("/")[0] == mlflow_key("mc+x/acc_stderr").split("/")[0]
    _validate_tag_name(NAME_TAG + mlflow_key("mc+x/acc").split("/")[0])


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop(server)


def test_a_task_mlflow_refuses_loses_none_of_the_runs_figures(mlflow_uri, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    tracker = MlflowTracker.start("keys", None)
    metrics = {"mc+x/acc": 0.5, "mc+x/acc_stderr": 0.125, "plain/acc": 0.25, "text:a b.txt/word_perplexity": 2.0}
    tracker.log_run(TrackedRun("r", "m", 3, metrics, params={"mc+x/task_hash": "abc", "model": "m"}))
    tracker.log_values({"check/passed": 1.0, "mc+x/acc": 0.75}, 4)
    tracker.finish()
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    renamed = mlflow_key("mc+x/acc").split("/")[0]
    assert renamed != "mc+x" and run.data.tags[NAME_TAG + renamed] == "mc+x"
    expected = {
        f"{renamed}/acc": 0.75,
        f"{renamed}/acc_stderr": 0.125,
        "plain/acc": 0.25,
        "text:a b.txt/word_perplexity": 2.0,
        "check/passed": 1.0,
    }
    assert run.data.metrics == expected
    assert run.data.params == {f"{renamed}/task_hash": "abc", "model": "m"}
    history = MlflowClient(mlflow_uri).get_metric_history(tracker.run_id, f"{renamed}/acc")
    assert sorted((m.step, m.value) for m in history) == [(3, 0.5), (4, 0.75)]
