"""Results where training teams look: ``--log-to mlflow|wandb|tensorboard`` (see ``docs/trackers.md``).

:class:`Trackers` is what an :class:`~llamabench.pipeline.Evaluation` logs through after it records a run, and
``watch`` after a check; each tool is one module here (``mlflow.py``, ``wandb.py``, ``tensorboard.py``) behind the
contract of ``base.py``, imported only when a run names it. A tracker never costs an evaluation: one that fails
(down, misconfigured, rejecting a value) gives one warning line and is not called again in this process; the run
folder, the store and the exit code are what they are without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llamabench.errors import LlamabenchError, first_line, warn
from llamabench.records.results import RunResult, write_run
from llamabench.trackers.base import TrackedRun, Tracker, run_metrics, run_params

# Environment variables holding secrets, whose values never reach a warning.
SECRET_VARIABLES = ("WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "DATABRICKS_TOKEN")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)((?:token|key|password|secret)=)[^&\s]+")
# How much of a tool's refusal a warning keeps: MLflow 3's refusal of a `file:` store is one line of ~600 characters
# whose last sentence is the way out (MLFLOW_ALLOW_FILE_STORE=true).
_TOOL_ADVICE = 1000


def redact(text: str) -> str:
    """``text`` without credentials: passwords in URLs, tokens in query strings, the values of SECRET_VARIABLES."""
    text = _SECRET_QUERY.sub(r"\1***", _URL_CREDENTIALS.sub("***@", text))
    for variable in SECRET_VARIABLES:
        secret = os.environ.get(variable)
        if secret:
            text = text.replace(secret, "***")
    return text


class Trackers:
    """The trackers one evaluation logs to, each started at its first run (in its tool's active run when there is
    one) and called through a guard. Runs with a training step share a tracker run, so their figures form a curve
    over the steps; a run without one (``llamabench run --model A --model B``) gets a tracker run of its own."""

    def __init__(self, names: Sequence[str] = (), output_dir: Path | None = None):
        self.names = list(dict.fromkeys(names))
        self.output_dir = output_dir
        self.started: dict[str, Tracker] = {}
        self.params: dict[str, dict[str, str]] = {}  # what each started tracker run holds as params
        self.failed: set[str] = set()
        self.runs = 0  # runs logged into the tracker runs now started

    def log_run(self, run: RunResult, folder: Path | None) -> None:
        """Log a recorded run (its run folder ``folder``, or None when none was written) to every tracker."""
        if not self.names:
            return
        step = run.manifest.step
        if step is None and self.runs:
            self.finish()
        with tempfile.TemporaryDirectory(prefix="llamabench-trackers-") as scratch:
            files = run_files(run, folder, Path(scratch))
            metrics = run_metrics(run.results)
            for name in self.names:

                def log(tracker: Tracker, name: str = name) -> None:
                    params = new_params(self.params.setdefault(name, {}), run_params(run), step)
                    model = str(run.manifest.model)
                    tracker.log_run(TrackedRun(run.manifest.run_id, model, step, metrics, params, run.samples, files))

                self._call(name, log, tracker_run_name(run))
        self.runs += 1

    def log_values(self, values: Mapping[str, float], step: int | None) -> None:
        """Log ``values`` (a check verdict) to every tracker that holds a run."""
        for name in list(self.started):
            self._call(name, lambda tracker: tracker.log_values(values, step))

    def finish(self) -> None:
        """End the tracker runs started here (an active run that was found is left running)."""
        for name in list(self.started):
            self._call(name, lambda tracker: tracker.finish())
        self.started.clear()
        self.params.clear()
        self.runs = 0

    def _call(self, name: str, action: Callable[[Tracker], None], run_name: str | None = None) -> None:
        """``action`` on tracker ``name`` (started as ``run_name`` if not yet): a failure is one warning line,
        and the tracker is not called again in this process."""
        if name in self.failed:
            return
        try:
            tracker = self.started.get(name)
            if tracker is None:
                if run_name is None:
                    return
                module = importlib.import_module(f"llamabench.trackers.{name}")
                tracker = self.started[name] = module.TRACKER.start(run_name, self.output_dir)
            action(tracker)
        except Exception as exc:  # whatever the tool raises: a tracker never costs an evaluation
            self.failed.add(name)
            self.started.pop(name, None)
            warn(
                redact(
                    f"--log-to {name}: not logged ({type(exc).__name__}: {first_line(exc, _TOOL_ADVICE)}); nothing "
                    f"more goes to {name} in this process, the run is recorded as usual"
                )
            )


def new_params(logged: dict[str, str], params: Mapping[str, str], step: int | None) -> dict[str, str]:
    """The ``params`` a tracker run that holds ``logged`` lacks (``logged`` is updated): one it holds with another
    value (a new checkpoint's fingerprint) is renamed ``step<N>/<name>``, since MLflow params cannot change."""
    fresh = {}
    for key, value in params.items():
        if key not in logged:
            logged[key] = fresh[key] = value
        elif logged[key] != value:
            fresh[f"step{step}/{key}"] = value
    return fresh


def tracker_run_name(run: RunResult) -> str:
    """A tracker run's name: the training folder for runs with a step, the model otherwise."""
    model = Path(str(run.manifest.config.get("model") or run.manifest.model))  # the path, for a checkpoint
    if run.manifest.step is not None and model.parent.name:
        return f"llamabench {model.parent.name}"
    return f"llamabench {model.name or run.manifest.model}"


def run_files(run: RunResult, folder: Path | None, scratch: Path) -> dict[str, Path]:
    """The files a tracker keeps of a run: the run folder's CSV and JSON files (written to ``scratch`` when the
    run wrote no folder) and its HTML report, by file name."""
    from llamabench.analysis.report import write_report

    try:
        folder = folder or write_run(run, scratch / "run")
        files = {path.name: path for path in sorted(folder.iterdir()) if path.suffix in (".csv", ".json")}
        html = write_report([run], scratch / "report")[2]
        files["report.html"] = html.rename(html.with_name("report.html"))  # tools keep a file's own name
    except (OSError, LlamabenchError) as exc:
        warn(f"--log-to: the run's files are not logged ({first_line(exc)})")
        return {}
    return files
