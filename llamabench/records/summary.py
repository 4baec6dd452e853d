"""A run's summary: what a report shows of it, small whatever the run's size (the store keeps one per run)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from llamabench.records.manifest import Manifest
from llamabench.records.results import RunResult

# The report shows each run's first documents per task; only these rows of a run are ever held for it.
MAX_SAMPLE_ROWS = 50
# The sample columns the report shows (besides the task's metric columns), and how much of a prompt: its end.
SAMPLE_COLUMNS = ("doc_id", "prompt", "prediction", "target")
PROMPT_TAIL_CHARS = 300


@dataclass
class RunSummary:
    """What a report shows of a run: the aggregate table, the manifest and each task's first documents (with the
    number of documents). Small whatever the run's size, so a report over hundreds of runs holds one run's full
    tables at a time at most. Not a run: its samples are a head, so it never feeds a statistical check."""

    results: pd.DataFrame
    manifest: Manifest
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)
    sample_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.manifest = Manifest.from_dict(self.manifest)


def summarize(run: RunResult | RunSummary, rows: int = MAX_SAMPLE_ROWS) -> RunSummary:
    """The summary of ``run`` (a summary is returned as it is)."""
    if isinstance(run, RunSummary):
        return run
    return RunSummary(
        run.results,
        run.manifest,
        {task: sample_head(frame.head(rows), run.results, task) for task, frame in run.samples.items()},
        {task: len(frame) for task, frame in run.samples.items()},
    )


def sample_head(frame: pd.DataFrame, results: pd.DataFrame, task: str) -> pd.DataFrame:
    """The columns of a task's first sample rows that the report shows, prompts cut to their end."""
    metrics = set(results.metric[results.task == task])
    head = frame[[c for c in frame.columns if c in SAMPLE_COLUMNS or c in metrics]].copy()
    if "prompt" in head:
        head["prompt"] = [_prompt_tail(prompt) for prompt in head["prompt"]]
    return head


def _prompt_tail(prompt: object) -> str:
    text = str(prompt or "")
    return ("…" + text[-PROMPT_TAIL_CHARS:]) if len(text) > PROMPT_TAIL_CHARS else text
