"""``--log-to wandb``: figures against ``llamabench/step``, settings and fingerprint in the run config, the
per-sample tables as W&B Tables and the run's files as an artifact.

Configured by W&B's own variables: ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_MODE`` (``offline`` writes the
run under ``$WANDB_DIR/wandb``, default ``./wandb``, to sync later), ``WANDB_DIR``, ``WANDB_API_KEY``;
``WANDB_INIT_TIMEOUT`` is 30 s unless set. A
run active in this process (``wandb.run``: a training job's) is logged into; otherwise a new run is made and
finished afterwards. The figures' x axis is their own ``llamabench/step`` (the checkpoint's or the Trainer's
step), which needs no order with a training job's own ``wandb.log`` calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from llamabench.trackers.base import TrackedRun, Tracker

STEP_METRIC = "llamabench/step"


class WandbTracker(Tracker):
    def __init__(self, run, owned: bool):
        self.run = run
        self.owned = owned
        self.defined: set[str] = set()

    @classmethod
    def start(cls, name: str, output_dir: Path | None) -> WandbTracker:
        os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
        import wandb

        if wandb.run is not None:
            return cls(wandb.run, owned=False)
        run = wandb.init(name=name, job_type="evaluation")
        return cls(run, owned=True)

    def log_run(self, run: TrackedRun) -> None:
        import wandb

        self.run.config.update(run.params, allow_val_change=True)
        tables = {f"samples/{task}": wandb.Table(dataframe=_plain(frame)) for task, frame in run.samples.items()}
        self._log({**run.metrics, **tables}, run.step)
        if run.files:
            artifact = wandb.Artifact(f"llamabench-{run.run_id}", type="llamabench-run")
            for name, path in run.files.items():
                artifact.add_file(str(path), name=name)
            self.run.log_artifact(artifact)

    def log_values(self, values: Mapping[str, float], step: int | None) -> None:
        self._log(dict(values), step)

    def _log(self, values: dict, step: int | None) -> None:
        if step is None:
            self.run.log(values)
            return
        for key in values.keys() - self.defined:
            self.run.define_metric(key, step_metric=STEP_METRIC)
            self.defined.add(key)
        self.run.log({STEP_METRIC: step, **values})

    def finish(self) -> None:
        if self.owned:
            self.run.finish()


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with lists and dicts (per-document statistics) as JSON text, which a W&B Table column holds."""
    return frame.map(lambda cell: json.dumps(cell, default=str) if isinstance(cell, list | dict | tuple) else cell)


TRACKER = WandbTracker
