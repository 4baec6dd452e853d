"""The tracker contract: what llamabench hands an experiment tracker (MLflow, W&B, TensorBoard) after each run.

A tracker module (``trackers/<name>.py``) defines one :class:`Tracker` subclass as ``TRACKER``. llamabench starts
it once per tracker run (:meth:`Tracker.start`: the active run of the tool when there is one, else a new one),
hands it each recorded run as one :class:`TrackedRun` (built here from the run, so every tracker logs the same
names and values) and each ``check`` verdict as plain values, and ends it with :meth:`Tracker.finish`. It never sees a
credential: the tool reads those from its own environment variables. A worked example, a tracker that prints::

    class PrintTracker(Tracker):
        @classmethod
        def start(cls, name, output_dir):
            return cls()

        def log_run(self, run):
            for key, value in run.metrics.items():  # "ppl/word_perplexity", "ppl/word_perplexity_stderr", ...
                print(run.step, key, value)

        def log_values(self, values, step):  # {"check/passed": 1.0, "check/regressed_metrics": 0.0}
            print(step, values)

        def finish(self):
            pass

    TRACKER = PrintTracker

A tracker may raise anything: :class:`~llamabench.trackers.Trackers` turns a failure into one warning line and logs
nothing more to that tracker in this process; the run folder, the store and the exit code never depend on it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llamabench.records.results import RunResult


class Tracker(ABC):
    """One tracker run that llamabench logs into (see the module docstring)."""

    @classmethod
    @abstractmethod
    def start(cls, name: str, output_dir: Path | None) -> Tracker:
        """The tool's active run (a training job's) when there is one, else a new run called ``name``;
        ``output_dir`` is the run's ``--output-dir`` (None when it writes no folder), for tools that write files."""

    @abstractmethod
    def log_run(self, run: TrackedRun) -> None:
        """Log one evaluation: its metrics at ``run.step``, its new params, its tables and files."""

    @abstractmethod
    def log_values(self, values: Mapping[str, float], step: int | None) -> None:
        """Log a few more figures (a ``check`` verdict) at ``step``."""

    @abstractmethod
    def finish(self) -> None:
        """End the run if :meth:`start` began it (an active run that was found is left running)."""


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker logs of one recorded run.

    ``metrics``: every aggregate figure as ``<task>/<metric>`` and its standard error as
    ``<task>/<metric>_stderr`` (left out where there is none); ``step`` the training step (None outside
    training); ``params``: the settings that change numbers (``<task>/<setting>``), the model and its content
    fingerprint, as text, only those this tracker run has not logged with the same value yet (one that changed
    is logged again as ``step<N>/<name>``, since MLflow params cannot change); ``samples``: the per-sample table
    of each task; ``files``: the run's files by artifact name (``results.csv``, ``manifest.json``, the
    per-sample CSVs, ``report.html``)."""

    run_id: str
    model: str
    step: int | None
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def metric_key(task: str, metric: str) -> str:
    """The name a figure is logged under: ``<task>/<metric>``."""
    return f"{task}/{metric}"


def run_metrics(results: pd.DataFrame) -> dict[str, float]:
    """Every figure of a results table and its standard error (where it has one), by logged name."""
    metrics: dict[str, float] = {}
    for row in results.itertuples():
        key = metric_key(row.task, row.metric)
        metrics[key] = float(row.value)
        if row.stderr is not None and not math.isnan(float(row.stderr)):
            metrics[f"{key}_stderr"] = float(row.stderr)
    return metrics


def run_params(run: RunResult) -> dict[str, str]:
    """The settings that change the run's numbers, by task, and the model with its content fingerprint."""
    params = {"model": str(run.manifest.model), "model_fingerprint": str(run.manifest.backend_info.fingerprint)}
    for task in run.manifest.tasks:
        settings = run.manifest.settings(task)
        if settings is None:
            continue
        for name, value in settings.record().items():
            if name not in ("format", "no_effect") and value is not None:
                params[f"{task}/{name}"] = str(value)
    return params
