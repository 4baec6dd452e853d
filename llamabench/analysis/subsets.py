"""Scores by contamination subset, and the LLaMA 2 paper's test of them (appendix A.6), from a run's own samples.

For each task of a run that a contamination folder (``llamabench contamination``) covers, each metric and each
minimum match length L of the folder, the figure on the whole set and on each of the paper's subsets (clean, not
clean, not dirty, dirty; documents undetectable at L are in none) is ``Metric.aggregate`` over the per-document
sufficient statistics of the run's samples table, so a corpus metric (BLEU, perplexity) is recomputed on the subset
exactly, not averaged from sentence scores. Each subset is then set against the sampling distribution of a subset
of its size, ``z`` = (value - mu_n) / sigma_n, as the paper's Z_n (``contamination/verdict.py``): for a mean of
per-document scores (accuracy, F1) mu_n is the whole set's mean and sigma_n its standard deviation over documents
divided by √n (√(p(1 - p)/n) for right/wrong scores, ``sigma_from`` "analytic"); for a corpus metric they are the
mean and standard deviation over ``draws`` seeded random subsets of the same size (``sigma_from`` "drawn").
``contaminated`` is the paper's verdict for the task, metric and L (all four |z| > 2, clean worse and dirty better
than the mean), and ``largest_length`` the largest L so claimed for the task and metric.

``clean_only`` keeps a run's clean documents only (at the folder's smallest L, the strictest), for
``check --exclude-contaminated``.

Worked example: accuracies ``[1, 0, 1, 1]`` (p = 0.75, σ = √(0.75 · 0.25) = 0.433) with contaminated fractions
``[0.9, 0.0, 0.1, 0.85]`` give dirty = documents 0 and 3 (mean 1.0): z = (1.0 - 0.75) / (0.433 / √2) = +0.82,
and clean = documents 1 and 2 (mean 0.5): z = -0.82; |z| <= 2, so no contamination is claimed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from llamabench.contamination.criterion import SUBSETS
from llamabench.contamination.result import read_contamination
from llamabench.contamination.verdict import SubsetTest, contaminated, largest_benefiting, mean_test, sampling_sigma
from llamabench.errors import LlamabenchError, note
from llamabench.metrics import get_metric
from llamabench.metrics.base import MeanMetric
from llamabench.records.results import RunResult, format_number, terminal_table
from llamabench.scoring import sample_stats

DRAWS = 1000


def subset_scores(run: RunResult, contamination: Path | str, *, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per task x metric x minimum length x subset ("all" first): ``n``, ``value``, the paper's ``mu_n``,
    ``sigma_n`` and ``z`` (and ``sigma_from``), its verdict ``contaminated`` and ``largest_length`` (the module)."""
    tables, _ = read_contamination(contamination)
    rows = []
    for task, samples in _covered_tasks(run, tables, contamination).items():
        for metric_name in run.results[run.results.task == task].metric:
            metric = get_metric(metric_name)
            stats = sample_stats(samples, metric_name)
            group = []
            for length, table in tables[task].groupby("min_length", sort=True):
                flags = _flags(task, samples, table, contamination)
                everything = np.ones(len(stats), dtype=bool)
                tests = {subset: _test(metric, stats, flags[subset], draws, seed) for subset in SUBSETS}
                undetectable = int(len(stats) - flags["not_dirty"].sum() - flags["dirty"].sum())
                verdict = contaminated({s: tests[s].z for s in SUBSETS}, metric.higher_is_better)
                for subset in ("all", *SUBSETS):
                    test = _test(metric, stats, everything, 0, seed) if subset == "all" else tests[subset]
                    group.append(_row(task, metric_name, length, subset, test, metric, undetectable, verdict))
            largest = largest_benefiting({row["min_length"]: row["contaminated"] for row in group})
            rows += [{**row, "largest_length": largest} for row in group]
    return pd.DataFrame(rows)


def _test(metric, stats: np.ndarray, chosen: np.ndarray, draws: int, seed: int) -> SubsetTest:
    """The paper's test of the documents ``chosen``: analytic for a mean metric, drawn for a corpus metric."""
    if isinstance(metric, MeanMetric):
        return mean_test(metric.per_sample(stats), chosen)
    size = int(chosen.sum())
    value = metric.aggregate(stats[chosen]) if size else math.nan
    if not 0 < size < len(stats) or draws < 2:
        whole = metric.aggregate(stats)
        return SubsetTest(size, value, whole, sampling_sigma(0.0, size) if size == len(stats) else math.nan)
    rng = np.random.default_rng(seed)
    random = np.array([metric.aggregate(stats[rng.choice(len(stats), size, replace=False)]) for _ in range(draws)])
    return SubsetTest(size, value, float(random.mean()), float(random.std(ddof=1)))


def format_subsets(scores: pd.DataFrame) -> str:
    """The scores by subset as a table to print (figures as the results table shows them)."""
    table = scores[["task", "metric", "min_length", "subset", "n"]].copy()
    for column in ("value", "mu_n", "sigma_n"):
        table[column] = scores[column].map(format_number)
    table["z"] = scores["z"].map(lambda v: "–" if math.isnan(v) else f"{v:+.2f}")
    table["contaminated"] = scores["contaminated"].map(lambda v: "yes" if v else "no")
    table["largest_L"] = scores["largest_length"].map(lambda v: "–" if v is None or pd.isna(v) else str(int(v)))
    return terminal_table(table)


def _row(task, metric_name, length, subset, test: SubsetTest, metric, undetectable: int, verdict: bool) -> dict:
    return {
        "task": task,
        "metric": metric_name,
        "min_length": int(length),
        "subset": subset,
        "n": test.n,
        "undetectable": undetectable,
        "value": test.mean,
        "mu_n": test.mu_n,
        "sigma_n": test.sigma_n,
        "z": test.z if subset != "all" else math.nan,
        "sigma_from": "analytic" if isinstance(metric, MeanMetric) else "drawn",
        "contaminated": verdict,
    }


def clean_only(run: RunResult, contamination: Path | str) -> RunResult:
    """``run`` with each task's samples cut to its clean documents (every task must be covered)."""
    tables, _ = read_contamination(contamination)
    tables = {task: table[table.min_length == table.min_length.min()] for task, table in tables.items()}
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
