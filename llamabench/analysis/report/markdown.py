"""The leaderboard as Markdown, for a pull-request comment: one table per task."""

from __future__ import annotations

from llamabench import escaping
from llamabench.analysis.report.leaderboard import Leaderboard

_md = escaping.markdown


def to_markdown(board: Leaderboard) -> str:
    """One table per task: runs × metrics, value ± stderr, the best per column in bold."""
    lines = ["## llamabench leaderboard", "", board.note("in **bold**", _md)]
    for task, columns in board.columns_by_task().items():
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
                value, stderr = board.cell(r, c)
                cells.append(f"**{value}** {stderr}".strip() if r in best[c] else f"{value} {stderr}".strip())
            x = "" if board.x[r] is None else board.x[r]
            lines.append(f"| {_md(label)} | {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
