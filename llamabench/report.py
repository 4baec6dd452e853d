"""Leaderboards across runs: ``leaderboard.csv``, ``leaderboard.md`` (for a PR comment) and ``leaderboard.html``.

The HTML page is self-contained (inline CSS, JS and SVG, no network): a sortable model × task/metric table
with the best value per column highlighted, one chart per task and metric across checkpoints, and a
per-sample drill-down per task and run. Every text that comes from a model or data is HTML-escaped, and the
data the script sorts on is embedded as JSON with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from llamabench import __version__, escaping
from llamabench.comparability import differences, recorded_settings, same_tokenizer
from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS
from llamabench.results import RunResult, format_number

_md, _esc = escaping.markdown, escaping.html_text
MAX_SAMPLE_ROWS = 50
PROMPT_TAIL_CHARS = 300
_STEP = re.compile(r"(?:step|checkpoint|ckpt|iter)[-_]?(\d+)", re.IGNORECASE)


def checkpoint_step(name: str) -> int | None:
    """The training step in a name such as ``step1000``, ``checkpoint-1000`` or ``ckpt_1000``, or a bare number."""
    if name.strip().isdigit():
        return int(name)
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
    """Runs (rows, in checkpoint order) × task/metric columns, with each run's position on the x axis."""

    runs: list[RunResult]
    labels: list[str]
    x: list[int]
    x_title: str
    columns: list[Column]
    values: np.ndarray
    stderrs: np.ndarray

    @property
    def run_ids(self) -> list[str]:
        return [run.manifest["run_id"] for run in self.runs]

    def incomparable_tasks(self) -> dict[str, list[str]]:
        """Tasks whose settings (task definition, few-shot count, context, dtype, data, ...) differ from the first
        run that has them, with the differences: their columns do not compare like with like."""
        found: dict[str, list[str]] = {}
        for task in dict.fromkeys(column.task for column in self.columns):
            settings = [recorded_settings(run.manifest, task) for run in self.runs if task in set(run.results.task)]
            differing = {text for other in settings[1:] for text in differences(settings[0], other)}
            if differing:
                found[task] = sorted(differing)
        return found

    def note(self, highlight: str, escape: Callable[[str], str]) -> str:
        """One line on how runs are ordered and read, plus a warning naming tasks whose runs are not comparable
        (``escape``d for the output format: task names are untrusted text; the rest is ours)."""
        text = (
            f"{len(self.runs)} runs, ordered by {self.x_title}; best value per column {highlight} "
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

    def to_frame(self) -> pd.DataFrame:
        """The wide table: run_id, model, label, x, then each column's value and stderr."""
        frame = pd.DataFrame(
            {
                "run_id": self.run_ids,
                "model": [run.manifest.get("model") for run in self.runs],
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


def build_leaderboard(runs: list[RunResult], labels: dict[str, str] | None = None) -> Leaderboard:
    """Order runs by training step (from their label or model name) when every run has one, else by start time."""
    labels = labels or {}
    runs = sorted({run.manifest["run_id"]: run for run in runs}.values(), key=lambda run: run.manifest["started"])
    unknown = set(labels) - {run.manifest["run_id"] for run in runs}
    if unknown:
        raise LlamabenchError(f"--label names run(s) not in the report: {', '.join(sorted(unknown))}")
    steps = [_step(run, labels.get(run.manifest["run_id"])) for run in runs]
    if None in steps:
        x, x_title = list(range(1, len(runs) + 1)), "run order"
    else:
        order = sorted(range(len(runs)), key=lambda i: steps[i])
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
    names = [labels.get(run.manifest["run_id"], run.manifest.get("model", "?")) for run in runs]
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


def _step(run: RunResult, label: str | None) -> int | None:
    names = [label, run.manifest.get("model"), run.manifest.get("config", {}).get("model")]
    steps = [checkpoint_step(name) for name in names if name]
    return next((step for step in steps if step is not None), None)


def write_report(runs: list[RunResult], out_dir: Path | str, labels: dict[str, str] | None = None) -> list[Path]:
    """Write leaderboard.csv, leaderboard.md and leaderboard.html under ``out_dir``; returns their paths."""
    if not runs:
        raise LlamabenchError("no runs to report; evaluate a model with `llamabench run` first")
    board = build_leaderboard(runs, labels)
    out = Path(out_dir)
    paths = [out / "leaderboard.csv", out / "leaderboard.md", out / "leaderboard.html"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        escaping.csv_frame(board.to_frame()).to_csv(paths[0], index=False)
        paths[1].write_text(to_markdown(board), encoding="utf-8")
        paths[2].write_text(to_html(board), encoding="utf-8")
    except OSError as exc:
        raise LlamabenchError(f"cannot write the report to {out} ({exc.strerror}); pick a writable --out") from exc
    return paths


def _by_task(board: Leaderboard) -> dict[str, list[int]]:
    tasks: dict[str, list[int]] = {}
    for i, column in enumerate(board.columns):
        tasks.setdefault(column.task, []).append(i)
    return tasks


def _cell(board: Leaderboard, row: int, column: int) -> tuple[str, str]:
    """A cell's value and its "± stderr" (empty without one), formatted."""
    stderr = board.stderrs[row, column]
    return format_number(board.values[row, column]), "" if math.isnan(stderr) else f"± {format_number(stderr)}"


def to_markdown(board: Leaderboard) -> str:
    """One table per task: runs × metrics, value ± stderr, the best per column in bold."""
    lines = ["## llamabench leaderboard", "", board.note("in **bold**", _md)]
    for task, columns in _by_task(board).items():
        best = {c: board.best_rows(c) for c in columns}
        lines += ["", f"### {_md(task)}", ""]
        lines.append(
            f"| model | {board.x_title} | "
            + " | ".join(_md(f"{board.columns[c].metric}{board.columns[c].marks}") for c in columns)
            + " |"
        )
        lines.append("|---|---:|" + "---:|" * len(columns))
        for r, label in enumerate(board.labels):
            cells = []
            for c in columns:
                value, stderr = _cell(board, r, c)
                cells.append(f"**{value}** {stderr}".strip() if r in best[c] else f"{value} {stderr}".strip())
            lines.append(f"| {_md(label)} | {board.x[r]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_html(board: Leaderboard) -> str:
    """The self-contained HTML report."""
    data = {
        "columns": [{"key": c.key, "higherIsBetter": c.higher_is_better} for c in board.columns],
        "rows": [
            {
                "runId": run_id,
                "label": label,
                "x": x,
                "values": [None if math.isnan(v) else float(v) for v in board.values[r]],
            }
            for r, (run_id, label, x) in enumerate(zip(board.run_ids, board.labels, board.x, strict=True))
        ],
    }
    return _PAGE.substitute(
        version=_esc(__version__),
        note=board.note("highlighted", _esc),
        table=_leaderboard_table(board),
        charts=_charts(board),
        samples=_samples(board),
        data=escaping.script_json(data),
        css=_CSS,
        js=_JS,
    )


def _leaderboard_table(board: Leaderboard) -> str:
    head = [
        '<th data-key="label" tabindex="0">model</th>',
        f'<th data-key="x" tabindex="0">{_esc(board.x_title)}</th>',
        '<th data-key="run_id" tabindex="0">run</th>',
    ]
    for column in board.columns:
        direction = {True: "higher is better", False: "lower is better", None: ""}[column.higher_is_better]
        head.append(
            f'<th data-key="{_esc(column.key)}" tabindex="0" title="{direction}">'
            f"{_esc(column.task)}<br>{_esc(column.metric)}{column.marks}</th>"
        )
    best = [board.best_rows(c) for c in range(len(board.columns))]
    body = []
    for r, (run_id, label, x) in enumerate(zip(board.run_ids, board.labels, board.x, strict=True)):
        cells = [f"<td>{_esc(label)}</td>", f"<td>{x}</td>", f"<td><code>{_esc(run_id)}</code></td>"]
        for c in range(len(board.columns)):
            value, stderr = _cell(board, r, c)
            css = ' class="best"' if r in best[c] else ""
            cells.append(f'<td{css}>{value} <span class="se">{stderr}</span></td>')
        body.append(f'<tr data-index="{r}">{"".join(cells)}</tr>')
    table = f'<table id="leaderboard"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="wide">{table}</div>'


def _charts(board: Leaderboard) -> str:
    parts = []
    for task, columns in _by_task(board).items():
        charts = "".join(_chart(board, c) for c in columns)
        parts.append(f'<section class="task"><h3>{_esc(task)}</h3><div class="charts">{charts}</div></section>')
    return "".join(parts)


def _chart(board: Leaderboard, column: int, width: int = 320, height: int = 200) -> str:
    """An SVG line chart of one metric against the x axis, with ± stderr bars and a tooltip per point."""
    left, right, top, bottom = 66, 14, 28, 36
    points = [
        (board.x[r], board.values[r, column], np.nan_to_num(board.stderrs[r, column]), board.labels[r])
        for r in range(len(board.runs))
        if not math.isnan(board.values[r, column])
    ]
    meta = board.columns[column]
    if not points:
        return ""
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] - p[2] for p in points), max(p[1] + p[2] for p in points)
    if x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_lo == y_hi:
        pad = abs(y_lo) * 0.05 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    base = height - bottom
    ticks = sorted({p[0] for p in points})
    if len(ticks) > 8:
        ticks = [ticks[0], ticks[-1]]
    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(meta.key)} by {_esc(board.x_title)}">',
        f'<text x="{left}" y="16" class="title">{_esc(meta.metric)}{meta.marks}</text>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" class="axis"/>',
        f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" class="axis"/>',
        f'<text x="{left - 4}" y="{sy(y_hi) + 4:.1f}" text-anchor="end">{format_number(y_hi)}</text>',
        f'<text x="{left - 4}" y="{sy(y_lo):.1f}" text-anchor="end">{format_number(y_lo)}</text>',
        *(f'<text x="{sx(t):.1f}" y="{base + 14}" text-anchor="middle">{t}</text>' for t in ticks),
        f'<text x="{(left + width - right) / 2}" y="{height - 4}" text-anchor="middle">{_esc(board.x_title)}</text>',
        '<polyline class="line" points="' + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _, _ in points) + '"/>',
    ]
    for x, y, stderr, label in points:
        tip = _esc(f"{label} ({board.x_title} {x}): {format_number(y)} ± {format_number(stderr)}")
        parts.append(
            f'<line class="err" x1="{sx(x):.1f}" y1="{sy(y - stderr):.1f}" x2="{sx(x):.1f}" y2="{sy(y + stderr):.1f}"/>'
        )
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5"><title>{tip}</title></circle>')
    return "".join(parts) + "</svg>"


def _samples(board: Leaderboard) -> str:
    """Per task and run, a collapsible table of the first documents: doc_id, prompt end, prediction, targets."""
    parts = []
    for task, columns in _by_task(board).items():
        metrics = [board.columns[c].metric for c in columns]
        parts.append(f"<h3>{_esc(task)}</h3>")
        for run_id, label, run in zip(board.run_ids, board.labels, board.runs, strict=True):
            frame = run.samples.get(task)
            if frame is None:
                continue
            shown = frame.head(MAX_SAMPLE_ROWS)
            head = "".join(
                f"<th>{_esc(name)}</th>" for name in ["doc_id", "prompt (end)", "prediction", "target", *metrics]
            )
            rows = []
            for row in shown.to_dict("records"):
                prompt = str(row.get("prompt") or "")
                prompt = ("…" + prompt[-PROMPT_TAIL_CHARS:]) if len(prompt) > PROMPT_TAIL_CHARS else prompt
                cells = [row["doc_id"], prompt, row.get("prediction") or "", _targets(row.get("target"))]
                cells += [format_number(row[m]) if m in row else "" for m in metrics]
                rows.append("<tr>" + "".join(f"<td>{_esc(cell)}</td>" for cell in cells) + "</tr>")
            parts.append(
                f"<details><summary>{_esc(label)} <code>{_esc(run_id)}</code>: first {len(shown)} of "
                f'{len(frame)} documents</summary><div class="scroll"><table class="samples">'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></details>"
            )
    return "".join(parts)


def _targets(target: object) -> str:
    try:
        targets = json.loads(str(target))
    except ValueError:
        return str(target)
    return " | ".join(map(str, targets)) if isinstance(targets, list) else str(targets)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d232a; }
h1 { font-size: 22px; } h2 { margin-top: 32px; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
#leaderboard td:nth-child(n+4) { text-align: right; white-space: nowrap; }
#leaderboard th { cursor: pointer; background: #f6f8fa; user-select: none; }
#leaderboard th[aria-sort=ascending]::after { content: " ▲"; }
#leaderboard th[aria-sort=descending]::after { content: " ▼"; }
td.best { background: #dafbe1; font-weight: 600; }
.se { color: #57606a; font-size: 12px; font-weight: normal; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { border: 1px solid #d0d7de; background: #fff; }
.chart text { font-size: 11px; fill: #57606a; } .chart .title { font-size: 13px; fill: #1d232a; }
.chart .axis { stroke: #8c959f; } .chart .line { fill: none; stroke: #0969da; stroke-width: 2; }
.chart .err { stroke: #0969da; opacity: .45; } .chart circle { fill: #0969da; }
details { margin: 6px 0; } summary { cursor: pointer; }
.wide { overflow-x: auto; } .scroll { max-height: 480px; overflow: auto; }
code { white-space: nowrap; }
table.samples td { max-width: 420px; white-space: pre-wrap; word-break: break-word; font-size: 12px; }
"""

_JS = """
(() => {
  const data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const table = document.getElementById("leaderboard");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const keys = data.columns.map((c) => c.key);
  const sortValue = (index, key) => {
    const row = data.rows[index];
    if (key === "label") return row.label;
    if (key === "x") return row.x;
    if (key === "run_id") return row.runId;
    return row.values[keys.indexOf(key)];
  };
  const sortBy = (th) => {
    const key = th.dataset.key;
    const column = keys.indexOf(key);
    const current = th.getAttribute("aria-sort");
    const descending = current ? current === "ascending" : column >= 0 && data.columns[column].higherIsBetter;
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const va = sortValue(Number(a.dataset.index), key);
      const vb = sortValue(Number(b.dataset.index), key);
      if (va === null || vb === null) return (va === null) - (vb === null);
      const order = typeof va === "string" ? va.localeCompare(vb) : va - vb;
      return descending ? -order : order;
    });
    rows.forEach((row) => body.appendChild(row));
    headers.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  };
  headers.forEach((th) => {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(th); }
    });
  });
})();
"""

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llamabench leaderboard</title>
<style>$css</style>
</head>
<body>
<h1>llamabench leaderboard</h1>
<p>$note Click a column header to sort. llamabench $version.</p>
<h2>Leaderboard</h2>
$table
<h2>Across checkpoints</h2>
$charts
<h2>Per-sample drill-down</h2>
$samples
<script type="application/json" id="leaderboard-data">$data</script>
<script>$js</script>
</body>
</html>
""")
