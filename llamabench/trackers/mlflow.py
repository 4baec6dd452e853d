"""``--log-to mlflow``: figures as metrics at the step, settings and fingerprint as params, files as artifacts.

Configured by MLflow's own variables: ``MLFLOW_TRACKING_URI`` (default: MLflow's, ``./mlflow.db`` in 3.18),
``MLFLOW_EXPERIMENT_NAME`` (created when missing; default: MLflow's default experiment), credentials
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``). A run active in this process (``mlflow.start_run()``, a
Trainer's MLflow integration) is logged into; otherwise a new run is made and ended afterwards. HTTP retries are
bounded (:data:`HTTP_LIMITS`, unless those variables are set), so a dead server costs seconds, not minutes, and
urllib3's line per retry is kept quiet: a failure is llamabench's one warning.

MLflow refuses a whole batch whose one key has a character outside its rule (a task named ``mc+x``), which would
lose every figure of the run: :func:`mlflow_key` renames only the parts of a key MLflow refuses, and the run gets a
tag ``llamabench.name.<renamed>`` holding the original name.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
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
# MLflow's rule for metric, param and tag keys (``mlflow.utils.validation``, outside Windows): word characters,
# slashes, periods, dashes, colons and spaces; no part that a path would resolve away (``a//b``, ``./a``, ``..``);
# at most 250 characters.
_KEY_PART = re.compile(r"[\w.\- :]+")
_REFUSED = re.compile(r"[^\w.\- :]")
MAX_KEY = 250
# The tag that names the original of a renamed key part.
NAME_TAG = "llamabench.name."


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _key_part(part: str) -> str:
    """``part`` of a key (between slashes) if MLflow takes it, else its characters MLflow takes (others as
    ``_``) and a digest of it, so that no two parts share a name."""
    if _KEY_PART.fullmatch(part) and part not in (".", ".."):
        return part
    return f"{_REFUSED.sub('_', part).strip('.')}-{_digest(part)}"


def mlflow_key(name: str) -> str:
    """The key MLflow logs ``name`` under: ``name`` itself if MLflow takes it, else each part it refuses renamed
    (see :func:`_key_part`); a key too long keeps its start and ends in a digest of ``name``."""
    key = "/".join(_key_part(part) for part in name.split("/"))
    if len(key) > MAX_KEY:
        key = f"{key[: MAX_KEY - 11].rstrip('/.')}-{_digest(name)}"
    return key


def renamed_parts(names) -> dict[str, str]:
    """The tag of each renamed key part among ``names``: ``llamabench.name.<renamed>`` to the original."""
    tags = {}
    for name in names:
        for part in name.split("/"):
            renamed = _key_part(part)
            if renamed != part:
                tags[NAME_TAG + renamed] = part
    return tags


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
        self.name_renamed([*run.metrics, *run.params])
        metrics = [Metric(mlflow_key(key), value, now, run.step or 0) for key, value in run.metrics.items()]
        params = [Param(mlflow_key(key), value) for key, value in run.params.items()]
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
        self.name_renamed(values)
        self.client.log_batch(
            self.run_id, metrics=[Metric(mlflow_key(key), value, now, step or 0) for key, value in values.items()]
        )

    def name_renamed(self, names) -> None:
        """Tag the run with the original of every key part of ``names`` that MLflow refuses (see ``mlflow_key``)."""
        from mlflow.entities import RunTag

        tags = [RunTag(key, value) for key, value in renamed_parts(names).items()]
        if tags:
            self.client.log_batch(self.run_id, tags=tags)

    @quiet_retries
    def finish(self) -> None:
        if self.owned:
            self.client.set_terminated(self.run_id)


TRACKER = MlflowTracker
