"""Leaderboards across runs: ``leaderboard.csv``, ``leaderboard.md`` (for a PR comment) and ``leaderboard.html``.

``leaderboard.py`` holds the model (which runs, which columns, which are comparable, which value is best);
``markdown.py`` and ``html.py`` render it; ``assets/`` holds the HTML page's stylesheet, script and skeleton.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llamabench import escaping
from llamabench.analysis.report.html import to_html
from llamabench.analysis.report.leaderboard import Leaderboard, build_leaderboard, checkpoint_step, parse_labels
from llamabench.analysis.report.markdown import to_markdown
from llamabench.errors import LlamabenchError
from llamabench.records.results import RunResult
from llamabench.records.summary import RunSummary, summarize


def write_report(
    runs: Sequence[RunResult | RunSummary], out_dir: Path | str, labels: dict[str, str] | None = None
) -> list[Path]:
    """Write leaderboard.csv, leaderboard.md and leaderboard.html under ``out_dir``; returns their paths. ``runs``
    may be summaries (:meth:`RunStore.gather` gives them): the report shows no more of a run than they hold."""
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


__all__ = [
    "Leaderboard",
    "RunSummary",
    "build_leaderboard",
    "checkpoint_step",
    "parse_labels",
    "summarize",
    "to_html",
    "to_markdown",
    "write_report",
]
