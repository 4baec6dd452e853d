"""``llamabench watch DIR``: the command line of a watch over a training folder (see ``training/watch.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamabench.cli.run import add_evaluation_options
from llamabench.config import RunConfig
from llamabench.digits import environment_int
from llamabench.errors import LlamabenchError


def add_watch_parser(commands) -> None:
    watch = commands.add_parser("watch", help="evaluate each checkpoint written under a folder as training goes")
    watch.add_argument("dir", type=Path, metavar="DIR", help="the training output folder (checkpoint-N, stepN, ...)")
    add_evaluation_options(watch)
    watch.add_argument("--baseline", default=None, metavar="RUN", help="check every checkpoint against this run")
    watch.add_argument("--every", type=float, default=60.0, help="seconds between polls (default 60)")
    watch.add_argument("--once", action="store_true", help="evaluate what is complete now (two polls), then exit")
    # Not `report`'s reports/: a watch rewrites its report after every poll, and would overwrite that leaderboard.
    watch.add_argument(
        "--out", type=Path, default=Path("reports", "watch"), help="report folder (default: reports/watch/)"
    )
    watch.add_argument(
        "--max-drop", action="append", default=[], metavar="METRIC=VALUE|PCT%", help="allowed drop (default 0)"
    )
    watch.add_argument("--alpha", type=float, default=0.05, help="significance level of the regression check")


def watch_command(args: argparse.Namespace) -> int:
    if environment_int("WORLD_SIZE", 1) > 1:
        raise LlamabenchError("watch runs in one process; start it without torchrun")
    if not args.every > 0:
        raise LlamabenchError(f"--every {args.every} must be a positive number of seconds")
    if not args.dir.is_dir():
        raise LlamabenchError(f"watch folder {args.dir} does not exist; create it or pass the training output folder")
    from llamabench.analysis.check import parse_max_drops
    from llamabench.pipeline import Evaluation
    from llamabench.records.store import RunStore
    from llamabench.training.watch import Watcher

    max_drops = parse_max_drops(args.max_drop)
    evaluation = Evaluation.prepare(RunConfig.from_args(args))
    store = RunStore.in_dir(evaluation.config.output_dir)
    baseline = store.load(args.baseline) if args.baseline else None
    watcher = Watcher(
        root=args.dir.resolve(),
        evaluation=evaluation,
        store=store,
        report_dir=args.out,
        baseline=baseline,
        max_drops=max_drops,
        alpha=args.alpha,
    )
    return watcher.loop(args.every, args.once)
