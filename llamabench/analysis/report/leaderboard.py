"""The leaderboard model: runs (rows, in checkpoint order) × task/metric columns, with values, standard errors,
which runs are comparable and which value is best. The renderers (``markdown.py``, ``html.py``) only lay it out."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from llamabench.digits import ascii_int
from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS
from llamabench.records.comparability import differences, same_tokenizer
from llamabench.records.results import RunResult, format_number
from llamabench.records.summary import RunSummary, summarize

_STEP = re.compile(r"(?:step|checkpoint|ckpt|iter)[-_]?([0-9]+)", re.IGNORECASE)


def checkpoint_step(name: str) -> int | None:
    """The training step in a name such as ``step1000``, ``checkpoint-1000`` or ``ckpt_1000``, or a bare number."""
    if ascii_int(name) is not None:
        return ascii_int(name)
    found = _STEP.findall(name)
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class Column:
    """One task × metric column of the leaderboard (``higher_is_better`` None: direction unknown, no best)."""

    task: str
    metric: str
    higher_is_better: bool | None
    comparable: bool = True

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"

    @property
    def arrow(self) -> str:
        return {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]

    @property
    def marks(self) -> str:
        """The direction arrow, and ≠ when the runs in this column ran the task with different settings."""
        return self.arrow + ("" if self.comparable else " ≠")


@dataclass
class Leaderboard:
    """Runs (rows, in checkpoint order) × task/metric columns, with each run's position on the x axis (None: a run
    without a step among runs with one)."""

    runs: list[RunSummary]
    labels: list[str]
    x: list[int | None]
    x_title: str
    columns: list[Column]
    values: np.ndarray
    stderrs: np.ndarray

    @property
    def run_ids(self) -> list[str]:
        return [run.manifest.run_id for run in self.runs]

    def incomparable_tasks(self) -> dict[str, list[str]]:
        """Tasks whose settings (task definition, few-shot count, context, dtype, data, ...) differ from the first
        run that has them, with the differences: their columns do not compare like with like."""
        found: dict[str, list[str]] = {}
        for task in dict.fromkeys(column.task for column in self.columns):
            settings = [run.manifest.settings(task) for run in self.runs if task in set(run.results.task)]
            differing = {text for other in settings[1:] for text in differences(settings[0], other)}
            if differing:
                found[task] = sorted(differing)
        return found

    def note(self, highlight: str, escape: Callable[[str], str]) -> str:
        """One line on how runs are ordered and read, plus a warning naming tasks whose runs are not comparable
        (``escape``d for the output format: task names are untrusted text; the rest is ours)."""
        order = self.x_title
        if None in self.x:
            order += " (runs without a step first; the charts draw them as dashed lines across)"
        text = (
            f"{len(self.runs)} runs, ordered by {order}; best value per column {highlight} "
            "(↑ higher is better, ↓ lower is better); ± is the standard error."
        )
        incomparable = self.incomparable_tasks()
        if incomparable:
            listed = "; ".join(f"{task} ({', '.join(diffs)})" for task, diffs in incomparable.items())
            text += f" Warning: columns marked ≠ compare runs with different settings: {escape(listed)}."
        return text

    def best_rows(self, column: int) -> set[int]:
        """Rows holding the column's best value (several on a tie), by its higher_is_better; none in a column
        whose runs are not comparable (marked ≠), where "best" would rank unlike with unlike."""
        values = self.values[:, column]
        meta = self.columns[column]
        if np.isnan(values).all() or meta.higher_is_better is None or not meta.comparable:
            return set()
        best = np.nanmax(values) if self.columns[column].higher_is_better else np.nanmin(values)
        return set(np.flatnonzero(values == best).tolist())

    def columns_by_task(self) -> dict[str, list[int]]:
        """Each task's column indices, in column order."""
        tasks: dict[str, list[int]] = {}
        for i, column in enumerate(self.columns):
            tasks.setdefault(column.task, []).append(i)
        return tasks

    def cell(self, row: int, column: int) -> tuple[str, str]:
        """A cell's value and its "± stderr" (empty without one), formatted."""
        stderr = self.stderrs[row, column]
        return format_number(self.values[row, column]), "" if math.isnan(stderr) else f"± {format_number(stderr)}"

    def to_frame(self) -> pd.DataFrame:
        """The wide table: run_id, model, label, x, then each column's value and stderr."""
        frame = pd.DataFrame(
            {
                "run_id": self.run_ids,
                "model": [run.manifest.model for run in self.runs],
                "label": self.labels,
                self.x_title: self.x,
            }
        )
        for i, column in enumerate(self.columns):
            frame[column.key] = self.values[:, i]
            frame[f"{column.key} stderr"] = self.stderrs[:, i]
        return frame


def parse_labels(specs: list[str], resolve: Callable[[str], str]) -> dict[str, str]:
    """``--label RUN=LABEL`` values as {run_id: label}; ``resolve`` maps RUN (id, prefix, folder) to a run_id."""
    labels = {}
    for spec in specs:
        ref, _, label = spec.partition("=")
        if not ref or not label:
            raise LlamabenchError(f"--label '{spec}' must be RUN=LABEL")
        labels[resolve(ref)] = label
    return labels


def build_leaderboard(runs: Sequence[RunResult | RunSummary], labels: dict[str, str] | None = None) -> Leaderboard:
    """Order runs by training step (from their label or model name), runs without one first (their x is None; the
    charts draw them as dashed lines across), or by start time when no run has a step.
    The board keeps each run's :class:`RunSummary`, not its full sample tables."""
    labels = labels or {}
    by_id = {run.manifest.run_id: summarize(run) for run in runs}
    runs = sorted(by_id.values(), key=lambda run: run.manifest.started)
    unknown = set(labels) - {run.manifest.run_id for run in runs}
    if unknown:
        raise LlamabenchError(f"--label names run(s) not in the report: {', '.join(sorted(unknown))}")
    steps = [_step(run, labels.get(run.manifest.run_id)) for run in runs]
    if all(step is None for step in steps):
        x, x_title = list(range(1, len(runs) + 1)), "run order"
    else:  # runs without a step (a base model beside its checkpoints) first, in start order, then by step
        order = sorted(range(len(runs)), key=lambda i: (steps[i] is not None, steps[i] or 0))
        runs, x, x_title = [runs[i] for i in order], [steps[i] for i in order], "step"
    columns: dict[tuple[str, str], Column] = {}
    for run in runs:
        for row in run.results.itertuples():
            direction = None if pd.isna(row.higher_is_better) else bool(row.higher_is_better)
            columns.setdefault((row.task, row.metric), Column(row.task, row.metric, direction))
    values = np.full((len(runs), len(columns)), np.nan)
    stderrs = np.full_like(values, np.nan)
    index = {key: i for i, key in enumerate(columns)}
    for r, run in enumerate(runs):
        for row in run.results.itertuples():
            values[r, index[row.task, row.metric]] = row.value
            stderrs[r, index[row.task, row.metric]] = row.stderr
    names = [labels.get(run.manifest.run_id, (run.manifest.model or "?")) for run in runs]
    board = Leaderboard(runs, names, x, x_title, list(columns.values()), values, stderrs)
    incomparable = board.incomparable_tasks()
    one_tokenizer = all(same_tokenizer(runs[0].manifest, run.manifest) for run in runs[1:])
    board.columns = [
        replace(column, comparable=column.task not in incomparable and (one_tokenizer or not _counts_tokens(column)))
        for column in board.columns
    ]
    return board


def _counts_tokens(column: Column) -> bool:
    """Whether the column's metric is counted in the model's tokens (lm-eval's metrics are not llamabench's)."""
    metric = METRICS.get(column.metric)
    return metric is not None and metric.tokenizer_dependent


def _step(run: RunSummary, label: str | None) -> int | None:
    if label is None and run.manifest.step is not None:  # recorded by watch and in-memory evaluation
        return int(run.manifest.step)
    names = [label, run.manifest.model, run.manifest.config.get("model")]
    steps = [checkpoint_step(name) for name in names if name]
    return next((step for step in steps if step is not None), None)
