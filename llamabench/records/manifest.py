"""The run manifest, built in one place: a run's identity, the model and backend that ran it, its configuration, a
note per task (documents, seconds, the settings that make runs comparable) and what else its evaluators recorded.

Each evaluator (native tasks in ``runner.py``, lm-eval tasks in ``interop/lm_eval_tasks.py``) returns a partial
:class:`~llamabench.records.results.RunResult` whose manifest holds only its ``tasks`` notes and its own sections
(lm-eval: ``lm_eval``); :func:`build_run` joins the parts into the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from llamabench import __version__
from llamabench.backends.base import Backend
from llamabench.records.results import RunResult, results_frame


def build_run(
    backend: Backend,
    config: dict,
    started: datetime,
    parts: Sequence[RunResult],
    *,
    step: int | None = None,
    sections: dict | None = None,
) -> RunResult:
    """One run from the partial results of its evaluators; ``step`` (a training step) and ``sections`` (e.g. how
    an in-memory model lay over the ranks) go into the manifest. ``config`` is the run's configuration as recorded
    (:meth:`RunConfig.record <llamabench.config.RunConfig.record>`)."""
    tasks: dict = {}
    extra: dict = {}
    for part in parts:
        tasks.update(part.manifest.get("tasks", {}))
        extra.update({key: value for key, value in part.manifest.items() if key != "tasks"})
    manifest = {
        "run_id": started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        "model": backend.model_id,
        # Described after every task ran, so the batches of all of them are counted.
        "backend": backend.describe(),
        "config": config,
        "tasks": tasks,
        "llamabench_version": __version__,
        "started": started.isoformat(timespec="seconds"),
        **extra,
        **(sections or {}),
    }
    if step is not None:
        manifest["step"] = int(step)
    rows = [row for part in parts for row in part.results.to_dict("records")]
    samples = {task: frame for part in parts for task, frame in part.samples.items()}
    return RunResult(results_frame(rows), samples, manifest)
