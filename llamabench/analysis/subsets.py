"""Scores by contamination subset, as the LLaMA 2 paper (appendix A.6) reports them, from a run's own samples.

For each task of a run that a contamination folder (``llamabench contamination``) covers, and each metric, the
figure on the whole set and on each of the paper's subsets (clean, not clean, not dirty, dirty) is
``Metric.aggregate`` over the per-document sufficient statistics of the run's samples table, so a corpus metric
(BLEU, perplexity) is recomputed on the subset exactly, not averaged from sentence scores. The paper's comparison:
the subset's figure against the figures of ``draws`` random subsets of the same size drawn (seeded, without
replacement) from the whole set: their mean and standard deviation, ``z`` = (subset - mean) / std, and the
percentile of the subset among them (the share of draws at or below it). A subset that is empty or the whole
set has no comparison (NaN).

``clean_only`` keeps a run's clean documents only, for ``check --exclude-contaminated``.

Worked example: accuracies ``[1, 0, 1, 1]`` with contaminated fractions ``[0.9, 0.0, 0.1, 0.85]`` give dirty
= documents 0 and 3 (mean 1.0) and clean = documents 1 and 2 (mean 0.5); random pairs of the four have mean
0.75, so the dirty subset sits above its random pairs and the clean one below.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from llamabench.contamination.result import read_contamination
from llamabench.errors import LlamabenchError, note
from llamabench.metrics import get_metric
from llamabench.records.results import RunResult, format_number, terminal_table
from llamabench.scoring import sample_stats

SUBSETS = ("clean", "not_clean", "not_dirty", "dirty")
DRAWS = 1000


def subset_scores(run: RunResult, contamination: Path | str, *, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per task x metric x subset ("all" first): ``n``, ``value``, and the random-subset comparison
    (``random_mean``, ``random_std``, ``z``, ``percentile``)."""
    tables, _ = read_contamination(contamination)
    rows = []
    for task, samples in _covered_tasks(run, tables, contamination).items():
        flags = _flags(task, samples, tables[task], contamination)
        for metric_name in run.results[run.results.task == task].metric:
            metric = get_metric(metric_name)
            stats = sample_stats(samples, metric_name)
            rows.append(_row(task, metric_name, "all", len(stats), metric.aggregate(stats)))
            rng = np.random.default_rng(seed)
            for subset in SUBSETS:
                chosen = flags[subset]
                size = int(chosen.sum())
                value = metric.aggregate(stats[chosen]) if size else math.nan
                row = _row(task, metric_name, subset, size, value)
                if 0 < size < len(stats):
                    random = np.array(
                        [metric.aggregate(stats[rng.choice(len(stats), size, replace=False)]) for _ in range(draws)]
                    )
                    std = float(random.std(ddof=1)) if draws > 1 else math.nan
                    row.update(
                        random_mean=float(random.mean()),
                        random_std=std,
                        z=(value - random.mean()) / std if std > 0 else math.nan,
                        percentile=float(100 * (random <= value).mean()),
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def format_subsets(scores: pd.DataFrame) -> str:
    """The scores by subset as a table to print (figures as the results table shows them)."""
    table = scores[["task", "metric", "subset", "n"]].copy()
    for column in ("value", "random_mean", "random_std"):
        table[column] = scores[column].map(format_number)
    table["z"] = scores["z"].map(lambda v: "–" if math.isnan(v) else f"{v:+.2f}")
    table["percentile"] = scores["percentile"].map(lambda v: "–" if math.isnan(v) else f"{v:.1f}")
    return terminal_table(table)


def _row(task: str, metric: str, subset: str, n: int, value: float) -> dict:
    nan = math.nan
    return {
        "task": task,
        "metric": metric,
        "subset": subset,
        "n": n,
        "value": value,
        "random_mean": nan,
        "random_std": nan,
        "z": nan,
        "percentile": nan,
    }


def clean_only(run: RunResult, contamination: Path | str) -> RunResult:
    """``run`` with each task's samples cut to its clean documents (every task must be covered)."""
    tables, _ = read_contamination(contamination)
    kept = {}
    for task, samples in run.samples.items():
        if task not in tables:
            raise LlamabenchError(
                f"--exclude-contaminated {contamination} has no result for task {task}; "
                f"scan it with `llamabench contamination --tasks {task}`"
            )
        kept[task] = samples[_flags(task, samples, tables[task], contamination)["clean"]].reset_index(drop=True)
        if kept[task].empty:
            raise LlamabenchError(f"task {task}: no clean document is left in {contamination}; nothing to check")
    return replace(run, samples=kept)


def _covered_tasks(run: RunResult, tables: dict, contamination) -> dict[str, pd.DataFrame]:
    """The run's tasks with per-document statistics that the contamination folder covers."""
    covered = {task: samples for task, samples in run.samples.items() if task in tables and "stats" in samples}
    for task in sorted(set(run.samples) - set(covered)):
        why = f"not in {contamination}" if task not in tables else "no per-document statistics"
        note(f"task {task}: no scores by subset ({why})")
    if not covered:
        raise LlamabenchError(
            f"--contamination {contamination} covers none of the run's tasks ({', '.join(run.samples)}); "
            "scan them with `llamabench contamination --tasks ...`"
        )
    return covered


def _flags(task: str, samples: pd.DataFrame, table: pd.DataFrame, contamination) -> dict[str, np.ndarray]:
    """Each subset's membership, aligned with ``samples`` (every sampled document must have a result)."""
    by_id = table.set_index("doc_id")
    missing = set(samples.doc_id) - set(by_id.index)
    if missing:
        raise LlamabenchError(
            f"task {task}: {len(missing)} document(s) of the run (e.g. doc_id {sorted(missing)[0]!r}) have no "
            f"contamination result in {contamination}; scan the same data (and --limit) as the run"
        )
    aligned = by_id.loc[samples.doc_id]
    return {subset: aligned[subset].to_numpy(dtype=bool) for subset in SUBSETS}
