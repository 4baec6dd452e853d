"""``--log-to mlflow``: figures as metrics at the step, settings and fingerprint as params, files as artifacts.

Configured by MLflow's own variables: ``MLFLOW_TRACKING_URI`` (default: MLflow's, ``./mlflow.db`` in 3.18),
``MLFLOW_EXPERIMENT_NAME`` (created when missing; default: MLflow's default experiment), credentials
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``). A run active in this process (``mlflow.start_run()``, a
Trainer's MLflow integration) is logged into; otherwise a new run is made and ended afterwards. HTTP retries are
bounded (:data:`HTTP_LIMITS`, unless those variables are set), so a dead server costs seconds, not minutes, and
urllib3's line per retry is kept quiet: a failure is llamabench's one warning.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from llamabench.trackers.base import TrackedRun, Tracker

# MLflow's defaults retry 7 times with backoff 2 (minutes against a dead server) and wait 120 s for an answer.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# MLflow's log_batch takes at most 1000 metrics and 100 params per call.
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100


def quiet_retries(method):
    """``method`` with urllib3's retry warnings off while it runs (the logger's level put back afterwards)."""

    @functools.wraps(method)
    def quiet(*args, **kwargs):
        logger = logging.getLogger("urllib3.connectionpool")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return method(*args, **kwargs)
        finally:
            logger.setLevel(level)

    return quiet


class MlflowTracker(Tracker):
    def __init__(self, client, run_id: str, owned: bool):
        self.client = client
        self.run_id = run_id
        self.owned = owned

    @classmethod
    @quiet_retries
    def start(cls, name: str, output_dir: Path | None) -> MlflowTracker:
        for variable, value in HTTP_LIMITS.items():
            os.environ.setdefault(variable, value)
        import mlflow
        from mlflow import MlflowClient

        client = MlflowClient()
        active = mlflow.active_run()
        if active is not None:
            return cls(client, active.info.run_id, owned=False)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if experiment:
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        else:
            experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID", "0")
        run = client.create_run(experiment_id, run_name=name, tags={"llamabench": "evaluation"})
        return cls(client, run.info.run_id, owned=True)

    @quiet_retries
    def log_run(self, run: TrackedRun) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, run.step or 0) for key, value in run.metrics.items()]
        params = [Param(key, value) for key, value in run.params.items()]
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + PARAMS_PER_BATCH])
        folder = f"llamabench/{run.run_id}" if run.step is None else f"llamabench/step-{run.step}"
        for path in run.files.values():
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    @quiet_retries
    def log_values(self, values: Mapping[str, float], step: int | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, value, now, step or 0) for key, value in values.items()]
        )

    @quiet_retries
    def finish(self) -> None:
        if self.owned:
            self.client.set_terminated(self.run_id)


TRACKER = MlflowTracker
