"""The leaderboard as one self-contained HTML page (inline CSS, JS and SVG, no network): a sortable table with
the best value per column highlighted, one chart per task and metric across checkpoints, and a per-sample
drill-down per task and run. Every text that comes from a model or data is HTML-escaped, and the data the
script sorts on is embedded as JSON with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc. The page's
stylesheet, script and skeleton are the files in ``assets/``, inlined at render time.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from string import Template

import numpy as np

from llamabench import __version__, escaping
from llamabench.analysis.report.leaderboard import Leaderboard
from llamabench.records.results import format_number
from llamabench.records.summary import MAX_SAMPLE_ROWS

_esc = escaping.html_text
_ASSETS = files("llamabench.analysis.report") / "assets"


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
    page = Template((_ASSETS / "page.html").read_text(encoding="utf-8"))
    return page.substitute(
        version=_esc(__version__),
        note=board.note("highlighted", _esc),
        table=_leaderboard_table(board),
        charts=_charts(board),
        samples=_samples(board),
        data=escaping.script_json(data),
        css=(_ASSETS / "report.css").read_text(encoding="utf-8"),
        js=(_ASSETS / "report.js").read_text(encoding="utf-8"),
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
        cells = [
            f"<td>{_esc(label)}</td>",
            f"<td>{'' if x is None else x}</td>",
            f"<td><code>{_esc(run_id)}</code></td>",
        ]
        for c in range(len(board.columns)):
            value, stderr = board.cell(r, c)
            css = ' class="best"' if r in best[c] else ""
            cells.append(f'<td{css}>{value} <span class="se">{stderr}</span></td>')
        body.append(f'<tr data-index="{r}">{"".join(cells)}</tr>')
    table = f'<table id="leaderboard"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="wide">{table}</div>'


def _charts(board: Leaderboard) -> str:
    parts = []
    for task, columns in board.columns_by_task().items():
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
    # A run without a step among runs with one (a base model) has no x: a dashed line across, its value.
    across = [point for point in points if point[0] is None]
    points = [point for point in points if point[0] is not None]
    if not points:
        return ""
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] - p[2] for p in points + across), max(p[1] + p[2] for p in points + across)
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
    for _, y, stderr, label in across:
        tip = _esc(f"{label} (no step): {format_number(y)} ± {format_number(stderr)}")
        parts.append(
            f'<line class="across" x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" '
            f'stroke-dasharray="4 3"><title>{tip}</title></line>'
        )
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
    for task, columns in board.columns_by_task().items():
        metrics = [board.columns[c].metric for c in columns]
        parts.append(f"<h3>{_esc(task)}</h3>")
        for run_id, label, run in zip(board.run_ids, board.labels, board.runs, strict=True):
            frame = run.samples.get(task)
            if frame is None:
                continue
            shown = frame.head(MAX_SAMPLE_ROWS)  # a summary's head, cut to its prompts' ends already
            head = "".join(
                f"<th>{_esc(name)}</th>" for name in ["doc_id", "prompt (end)", "prediction", "target", *metrics]
            )
            rows = []
            for row in shown.to_dict("records"):
                cells = [
                    row["doc_id"],
                    row.get("prompt") or "",
                    row.get("prediction") or "",
                    _targets(row.get("target")),
                ]
                cells += [format_number(row[m]) if m in row else "" for m in metrics]
                rows.append("<tr>" + "".join(f"<td>{_esc(cell)}</td>" for cell in cells) + "</tr>")
            parts.append(
                f"<details><summary>{_esc(label)} <code>{_esc(run_id)}</code>: first {len(shown)} of "
                f'{run.sample_counts[task]} documents</summary><div class="scroll"><table class="samples">'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></details>"
            )
    return "".join(parts)


def _targets(target: object) -> str:
    try:
        targets = json.loads(str(target))
    except ValueError:
        return str(target)
    return " | ".join(map(str, targets)) if isinstance(targets, list) else str(targets)
