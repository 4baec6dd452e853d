"""Paired regression check of a candidate run against a baseline run, document by document.

Both runs' per-sample tables are aligned by (task, doc_id). For each task × metric, ``delta`` is
candidate − baseline in the metric's good direction (negative = worse; for perplexities it is
baseline − candidate). The one-sided p-value for "the candidate is worse" is the metric's own paired test
(``Metric.paired_test_of``): for right-or-wrong metrics (``BinaryMetric``) the exact McNemar test; for the others
the exact permutation test (every way of swapping the documents whose statistics differ between the runs: a
sign flip of a mean metric's per-document difference) when at most 12 documents differ, else a paired
bootstrap, the share of resampled deltas that are >= 0. The bootstrap resamples the same documents for both runs,
each aggregated with ``Metric.aggregate`` over its sufficient statistics, so corpus metrics (BLEU, perplexity) are
resampled exactly; the interval shown is its [alpha, 1 − alpha] percentile range (90 % for alpha 0.05; none on
one document, where every resample is the same). A row is a regression when its drop exceeds the allowed drop
and p < alpha.

A row whose drop exceeds the allowed one but whose documents could not show it at alpha, because even the most
extreme outcome on them (every differing document worse, the smallest p the test can give: 1 / 2**differing)
has p >= alpha, is ``INCONCLUSIVE``: neither a pass nor a regression. It does not fail the check (exit 0, the
verdict line says INCONCLUSIVE, not PASS) and is a skipped testcase in JUnit.

A row whose figures or per-document statistics hold a NaN or an infinity (a diverged checkpoint, an overflowed
perplexity) has no number to compare: it fails as ``NOT A NUMBER``, whatever its p-value, in the table, the exit
status and JUnit alike.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llamabench.errors import LlamabenchError
from llamabench.escaping import terminal, xml_text
from llamabench.metrics import get_metric
from llamabench.metrics.uncertainty import paired_bootstrap
from llamabench.records.comparability import require_same_prompts, require_same_settings, same_tokenizer
from llamabench.records.results import RunResult, format_number, terminal_table
from llamabench.scoring import sample_stats


@dataclass(frozen=True)
class MaxDrop:
    """The drop allowed for a metric: in its own units, or (``relative``) in percent of the baseline value."""

    amount: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.amount / 100 if self.relative else self.amount


@dataclass(frozen=True)
class Comparison:
    """One task × metric of the check.

    ``delta`` is candidate − baseline in the metric's good direction (negative = worse), ``ci_low``/``ci_high``
    its bootstrap interval (nan on one document), and ``p_value`` the one-sided p-value that the candidate is
    worse, from ``test`` ("permutation", "bootstrap" or "mcnemar"), whose ``smallest_p`` is the smallest it
    could give on these documents, of which ``differing`` differ between the runs.
    """

    task: str
    metric: str
    n: int
    baseline: float
    candidate: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    allowed_drop: float
    regression: bool
    smallest_p: float = 0.0
    differing: int = 0
    # A drop beyond the allowed one that these documents could not show at alpha, whatever their outcome.
    inconclusive: bool = False
    non_finite: bool = False  # a figure or statistic of either run is NaN or infinite: nothing was compared

    @property
    def failed(self) -> bool:
        """Whether this row fails the check: a regression, or numbers that are not numbers."""
        return self.regression or self.non_finite

    @property
    def power(self) -> str:
        """How far these documents can go: why an ``inconclusive`` row is one."""
        return (
            f"{self.n} document(s), {self.differing} differing: the smallest p they can give is {self.smallest_p:.4g}"
        )

    @property
    def verdict(self) -> str:
        if self.non_finite:
            return "NOT A NUMBER"
        return "REGRESSION" if self.regression else "INCONCLUSIVE" if self.inconclusive else "ok"


def parse_max_drops(specs: list[str]) -> dict[str, MaxDrop]:
    """``--max-drop`` values: ``metric=0.5`` (metric units) or ``metric=2%`` (of the baseline value)."""
    drops = {}
    for spec in specs:
        metric, _, amount = spec.partition("=")
        relative = amount.endswith("%")
        try:
            value = float(amount.removesuffix("%"))
        except ValueError:
            value = math.nan
        if not metric or not value >= 0:
            raise LlamabenchError(f"--max-drop '{spec}' must be METRIC=VALUE or METRIC=PERCENT% with a value >= 0")
        drops[metric] = MaxDrop(value, relative)
    return drops


def unchecked_tasks(*runs: RunResult) -> list[str]:
    """Tasks whose per-sample table in any of ``runs`` lacks sufficient statistics (lm-eval tasks): skipped."""
    return sorted({task for run in runs for task, samples in run.samples.items() if "stats" not in samples})


@dataclass(frozen=True)
class Unchecked:
    """A task (``metric`` None: all its metrics) or task × metric that ``check`` leaves out, and why."""

    task: str
    metric: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.task}{'' if self.metric is None else '/' + self.metric} ({self.reason})"


def unchecked(baseline: RunResult, candidate: RunResult) -> list[Unchecked]:
    """What ``check`` cannot compare: tasks without per-sample statistics, and tokenizer-dependent metrics
    (``token_perplexity``) when the runs' tokenizers differ, since a token of one is not a token of the other."""
    left_out = [Unchecked(task, None, "no per-sample statistics") for task in unchecked_tasks(baseline, candidate)]
    if not same_tokenizer(baseline.manifest, candidate.manifest):
        skipped_tasks = {item.task for item in left_out}
        left_out += [
            Unchecked(row.task, row.metric, "the runs' tokenizers differ")
            for row in baseline.results[["task", "metric"]].drop_duplicates().itertuples()
            if row.task not in skipped_tasks and get_metric(row.metric).tokenizer_dependent
        ]
    return left_out


def compare_runs(
    baseline: RunResult,
    candidate: RunResult,
    *,
    max_drops: dict[str, MaxDrop] | None = None,
    alpha: float = 0.05,
    iters: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """Every task × metric of two comparable runs; raises LlamabenchError when they are not comparable.

    Tasks listed by :func:`unchecked_tasks` are left out (after the check that both runs have them).

    Every metric's bootstrap restarts from ``seed``, so the metrics of a task see the same resampled documents.
    """
    if not 0 < alpha < 1:
        raise LlamabenchError(f"--alpha {alpha} must be between 0 and 1")
    if iters < 1:
        raise LlamabenchError(f"--bootstrap-iters {iters} must be at least 1")
    max_drops = max_drops or {}
    left_out = {(item.task, item.metric) for item in unchecked(baseline, candidate)}
    rows = []
    for task, (base, cand) in _aligned_samples(baseline, candidate).items():
        for metric_name in baseline.results[baseline.results.task == task].metric:
            if (task, metric_name) in left_out:
                continue
            metric = get_metric(metric_name)
            base_stats, cand_stats = sample_stats(base, metric_name), sample_stats(cand, metric_name)
            sign = 1.0 if metric.higher_is_better else -1.0
            base_value, cand_value = metric.aggregate(base_stats), metric.aggregate(cand_stats)
            deltas = sign * paired_bootstrap(metric.aggregate, base_stats, cand_stats, iters=iters, seed=seed)
            test = metric.paired_test_of(base_stats, cand_stats, deltas)
            delta = sign * (cand_value - base_value)
            allowed = max_drops[metric_name].allowed(base_value) if metric_name in max_drops else 0.0
            non_finite = not all(np.isfinite(x).all() for x in (base_stats, cand_stats, [base_value, cand_value]))
            dropped = -delta > allowed
            # One document resamples to itself every time: the bootstrap has no interval to give.
            low, high = (
                (np.quantile(deltas, alpha), np.quantile(deltas, 1 - alpha)) if len(base) > 1 else (math.nan,) * 2
            )
            rows.append(
                Comparison(
                    task=task,
                    metric=metric_name,
                    n=len(base),
                    baseline=base_value,
                    candidate=cand_value,
                    delta=delta,
                    ci_low=float(low),
                    ci_high=float(high),
                    p_value=test.p_value,
                    test=test.name,
                    allowed_drop=allowed,
                    regression=dropped and test.p_value < alpha,
                    smallest_p=test.smallest_p,
                    differing=test.differing,
                    inconclusive=dropped and test.smallest_p >= alpha and not non_finite,
                    non_finite=non_finite,
                )
            )
    unknown = set(max_drops) - {row.metric for row in rows}
    if unknown:
        known = ", ".join(sorted({row.metric for row in rows}))
        raise LlamabenchError(f"--max-drop names {', '.join(sorted(unknown))}, not a metric of these runs ({known})")
    return rows


def _aligned_samples(baseline: RunResult, candidate: RunResult) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per task, both runs' per-sample tables in the baseline's document order."""
    if set(baseline.samples) != set(candidate.samples):
        only_base = ", ".join(sorted(set(baseline.samples) - set(candidate.samples))) or "-"
        only_cand = ", ".join(sorted(set(candidate.samples) - set(baseline.samples))) or "-"
        raise LlamabenchError(
            f"runs cover different tasks (only baseline: {only_base}; only candidate: {only_cand}); "
            "evaluate the candidate on the baseline's tasks"
        )
    skipped = set(unchecked_tasks(baseline, candidate))
    aligned = {}
    for task, base in baseline.samples.items():
        if task in skipped:
            continue
        require_same_settings(task, baseline.manifest, candidate.manifest)
        cand = candidate.samples[task]
        for name, frame in (("baseline", base), ("candidate", cand)):
            if frame.doc_id.duplicated().any():
                raise LlamabenchError(f"the {name}'s task {task} repeats doc_ids, so documents cannot be paired")
        if set(base.doc_id) != set(cand.doc_id):
            missing, extra = set(base.doc_id) - set(cand.doc_id), set(cand.doc_id) - set(base.doc_id)
            raise LlamabenchError(
                f"task {task}: the runs scored different documents ({len(missing)} only in the baseline, "
                f"{len(extra)} only in the candidate); use the same data and --limit"
            )
        cand = cand.set_index("doc_id").loc[base.doc_id].reset_index()
        require_same_prompts(task, base, cand)
        aligned[task] = (base, cand)
    return aligned


def format_comparisons(rows: list[Comparison], alpha: float, left_out: list[Unchecked]) -> str:
    """The check as a table plus a one-line verdict, naming what was ``left_out`` and why."""
    ci_level = round(100 * (1 - 2 * alpha))
    table = pd.DataFrame(
        {
            "task": [r.task for r in rows],
            "metric": [r.metric for r in rows],
            "baseline": [_figure(r.baseline) for r in rows],
            "candidate": [_figure(r.candidate) for r in rows],
            "delta (+ = better)": [_signed(r.delta) for r in rows],
            f"{ci_level}% CI": [_interval(r) for r in rows],
            "p (worse)": [f"{r.p_value:.4f}" for r in rows],
            "test": [r.test for r in rows],
            "allowed drop": [format_number(r.allowed_drop) for r in rows],
            "verdict": [r.verdict for r in rows],
        }
    )
    regressions = [f"{r.task}/{r.metric}" for r in rows if r.regression and not r.non_finite]
    not_numbers = [f"{r.task}/{r.metric}" for r in rows if r.non_finite]
    undecided = [r for r in rows if r.inconclusive]
    inconclusive = "; ".join(f"{r.task}/{r.metric} on {r.power}, not below alpha {alpha}" for r in undecided)
    if regressions or not_numbers:
        failures = [f"{len(regressions)} regression(s) at alpha {alpha}: {', '.join(regressions)}"] * bool(regressions)
        if not_numbers:
            failures.append(f"{len(not_numbers)} not a number (NaN or infinite): {', '.join(not_numbers)}")
        verdict = f"FAIL: {terminal('; '.join(failures))}"
        if inconclusive:
            verdict += f"\ninconclusive: {terminal(inconclusive)}"
    elif inconclusive:
        others = len(rows) - len(undecided)
        verdict = f"INCONCLUSIVE: {terminal(inconclusive)}; no regression in the other {others} task-metric comparisons"
    else:
        verdict = f"PASS: no regression in {len(rows)} task-metric comparisons at alpha {alpha}"
    if left_out:
        verdict += f"\nnot checked: {terminal('; '.join(map(str, left_out)))}"
    return f"{terminal_table(table)}\n\n{verdict}"


def _figure(value: float) -> str:
    """A figure as ``format_number`` shows it, but a NaN as ``nan`` (format_number shows a missing value, –)."""
    return format_number(value) if not math.isnan(value) else "nan"


def _interval(row: Comparison) -> str:
    """The bootstrap interval, or – where there is none (one document)."""
    return "–" if math.isnan(row.ci_low) else f"[{_signed(row.ci_low)}, {_signed(row.ci_high)}]"


def _signed(value: float) -> str:
    text = _figure(value + 0.0)  # + 0.0 turns -0.0 into 0.0
    return text if text[0] in "-–" or text == "nan" else "+" + text


def write_junit(rows: list[Comparison], path: Path | str, suite: str, left_out: list[Unchecked]) -> None:
    """Write JUnit XML: a testcase per task × metric (class ``llamabench.<task>``), a failure per regression,
    and a skipped testcase per inconclusive row and per task or metric ``left_out``."""
    failures = sum(r.failed for r in rows)
    attrs = {
        "name": xml_text(suite),
        "tests": str(len(rows) + len(left_out)),
        "failures": str(failures),
        "errors": "0",
    }
    root = ET.Element("testsuites", attrs)
    skipped = len(left_out) + sum(r.inconclusive for r in rows)
    testsuite = ET.SubElement(root, "testsuite", {**attrs, "skipped": str(skipped)})
    for item in left_out:
        name = xml_text(item.metric or "all metrics")
        case = ET.SubElement(testsuite, "testcase", {"classname": f"llamabench.{xml_text(item.task)}", "name": name})
        ET.SubElement(case, "skipped", {"message": xml_text(f"not checked: {item.reason}")})
    for r in rows:
        case = ET.SubElement(
            testsuite, "testcase", {"classname": f"llamabench.{xml_text(r.task)}", "name": xml_text(r.metric)}
        )
        details = (
            f"baseline {r.baseline:.6g}, candidate {r.candidate:.6g}, delta {r.delta:+.6g} "
            f"({_interval(r)}), p {r.p_value:.4g} ({r.test}), "
            f"allowed drop {r.allowed_drop:.6g}, n {r.n}"
        )
        if r.failed:
            what = "is not a number (NaN or infinite)" if r.non_finite else "regressed"
            message = xml_text(f"{r.task}/{r.metric} {what}: {details}")
            kind = "non-finite" if r.non_finite else "regression"
            ET.SubElement(case, "failure", {"message": message, "type": kind}).text = message
        elif r.inconclusive:
            message = xml_text(f"inconclusive: {r.power}, too few to show this drop; {details}")
            ET.SubElement(case, "skipped", {"message": message})
        else:
            ET.SubElement(case, "system-out").text = details
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise LlamabenchError(f"cannot write --junit {path} ({exc.strerror})") from exc
