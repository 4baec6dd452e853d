"""Command line: ``llamabench run``, ``watch``, ``tasks``, ``runs``, ``report``, ``check`` and ``examples`` (``run``
and ``watch`` in their own modules)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from llamabench import __version__
from llamabench.cli.contamination import add_contamination_parser, contamination_command
from llamabench.cli.run import add_evaluation_options, add_scale_options, run_command
from llamabench.cli.watch import add_watch_parser, watch_command
from llamabench.errors import LlamabenchError, first_line, is_network_error, network_advice, note, say
from llamabench.escaping import terminal


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem and where help is), exit 2, as every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="llamabench", description="Evaluate LLaMA-family checkpoints.")
    parser.add_argument("--version", action="version", version=f"llamabench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    run = commands.add_parser("run", help="evaluate a model on tasks")
    run.add_argument(
        "--model",
        action="append",
        default=[],
        help="model directory, .gguf file, hub id, alias or quoted glob (default: smollm2-135m, the embedded "
        "SmolLM2-135M-Instruct Q4_1 GGUF dequantised to fp32); repeat for several",
    )
    add_evaluation_options(run)
    run.add_argument(
        "--contamination", type=Path, default=None, metavar="DIR", help="also show scores by contamination subset"
    )
    add_scale_options(run)

    add_watch_parser(commands)
    add_contamination_parser(commands)

    tasks = commands.add_parser("tasks", help="list the available tasks and their metrics")
    tasks.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--output-dir", type=Path, default=None, help="the runs folder holding llamabench.sqlite (default: runs/)"
    )
    # The name this folder had before `run --output-dir` and these commands agreed on one; kept working.
    store.add_argument("--results-dir", type=Path, default=None, help=argparse.SUPPRESS)
    commands.add_parser("runs", parents=[store], help="list the runs recorded in the results folder")
    report = commands.add_parser("report", parents=[store], help="leaderboard of runs: CSV, Markdown and HTML")
    report.add_argument("runs", nargs="*", metavar="RUN", help="run ids, unique prefixes or folders (default: all)")
    report.add_argument("--out", type=Path, default=Path("reports"), help="report folder (default: reports/)")
    report.add_argument("--label", action="append", default=[], metavar="RUN=LABEL", help="a run's name and x")
    report.add_argument(
        "--contamination", type=Path, default=None, metavar="DIR", help="also scores by contamination subset"
    )
    merge = commands.add_parser(
        "merge", parents=[store], help="join the partial runs of --shard 0/N .. N-1/N into the unsharded run"
    )
    merge.add_argument("runs", nargs="+", metavar="RUN", help="the shards' run ids, unique prefixes or folders")
    check = commands.add_parser(
        "check",
        parents=[store],
        help="fail when a candidate run regresses on a baseline",
        description="Compare a candidate run with a baseline, document by document. Exit status: 1 when a row is a "
        "REGRESSION or NOT A NUMBER; 2 when the runs cannot be compared or the input is bad; else 0, with the verdict "
        "PASS, or INCONCLUSIVE when a row dropped but its documents are too few to show a drop at --alpha even if "
        "every one of them were worse (a skipped testcase in --junit).",
    )
    check.add_argument("--baseline", required=True, metavar="RUN", help="run id, unique prefix or folder")
    check.add_argument("--candidate", required=True, metavar="RUN", help="run id, unique prefix or folder")
    check.add_argument(
        "--max-drop", action="append", default=[], metavar="METRIC=VALUE|PCT%", help="allowed drop (default 0)"
    )
    check.add_argument("--alpha", type=float, default=0.05, help="significance level of the one-sided tests")
    check.add_argument("--junit", type=Path, default=None, help="write JUnit XML here")
    check.add_argument("--bootstrap-iters", type=int, default=1000, help="paired bootstrap resamples")
    check.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    check.add_argument(
        "--exclude-contaminated", type=Path, default=None, metavar="DIR", help="check clean documents only"
    )
    examples = commands.add_parser(
        "examples", help="write the files the documentation's examples use (tiny checkpoints, text, the GGUF)"
    )
    examples.add_argument("dir", nargs="?", type=Path, default=Path("."), help="where (default: here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "run": run_command,
        "watch": watch_command,
        "tasks": _list_tasks,
        "runs": _list_runs,
        "report": _report,
        "check": _check,
        "contamination": contamination_command,
        "merge": _merge,
        "examples": _examples,
    }
    try:
        return handlers[args.command](args)
    except (LlamabenchError, *_ENVIRONMENT_ERRORS) as exc:
        if args.debug:
            raise
        say(f"llamabench: error: {terminal(_one_line(exc))}")
        return 2
    except KeyboardInterrupt:
        say("llamabench: interrupted; finished request results are kept in the cache")
        return 130
    except Exception as exc:  # noqa: BLE001  (the last line of defence: one line, the traceback on --debug)
        if args.debug:
            raise
        reason = terminal(f"{type(exc).__name__}: {first_line(exc)}")
        say(
            f"llamabench: error: unexpected {reason}; if the input looks right, this is a llamabench bug: rerun "
            "with --debug and report the traceback"
        )
        return 2


def _runs_folder(args: argparse.Namespace) -> Path:
    """The runs folder of ``runs``, ``report`` and ``check``: ``--output-dir``, or ``--results-dir``, its old name
    (deprecated in docs/ci.md, but silent: scripts that parse stderr keep working)."""
    if args.results_dir is None:
        return args.output_dir or Path("runs")
    if args.output_dir is not None and args.output_dir != args.results_dir:
        raise LlamabenchError(
            f"--output-dir {args.output_dir} and --results-dir {args.results_dir} name two folders; "
            "give --output-dir only (--results-dir is its old name)"
        )
    return args.results_dir


# Failures of the machine or of files rather than of llamabench (a full or read-only disk, a corrupt SQLite
# file, undecodable bytes): said in one line naming the thing, as bad input is.
_ENVIRONMENT_ERRORS = (OSError, sqlite3.Error, UnicodeError, MemoryError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, LlamabenchError):
        return " ".join(str(exc).split("\n"))
    if is_network_error(exc):
        return f"{type(exc).__name__}: {first_line(exc)}; {network_advice()}"
    if isinstance(exc, OSError) and exc.filename:
        reason = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    return f"{reason}; check the disk, the path and its permissions (--debug shows where it happened)"


def _examples(args: argparse.Namespace) -> int:
    from llamabench.examples import write_examples

    for path in write_examples(args.dir):
        print(f"wrote {terminal(str(path))}")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    from llamabench.escaping import terminal
    from llamabench.tasks import registry

    specs = {id(s): s for s in registry.discover(registry.task_dirs(args.tasks_dir)).values()}.values()
    for spec in sorted(specs, key=lambda s: s.name):
        aliases = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(terminal(f"{spec.name}{aliases}  [{spec.kind}]  metrics: {', '.join(spec.metrics)}"))
    return 0


def _list_runs(args: argparse.Namespace) -> int:
    from llamabench.records.results import terminal_table
    from llamabench.records.store import RunStore

    store = RunStore.in_dir(_runs_folder(args))
    runs, notes = store.listing()
    print(terminal_table(runs) if len(runs) else f"no runs recorded in {store.path}")
    for line in notes:
        note(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from llamabench.analysis.report import parse_labels, write_report
    from llamabench.records.store import RunStore

    store = RunStore.in_dir(_runs_folder(args))
    runs, notes = store.gather(args.runs)
    for line in notes:
        note(line)
    paths = write_report(runs, args.out, parse_labels(args.label, store.resolve))
    if args.contamination is not None:
        from llamabench.cli.contamination import report_subsets

        refs = args.runs or [run.manifest.run_id for run in runs]
        paths += report_subsets([store.load(ref) for ref in refs], args.contamination, args.out)
    print("report written to " + ", ".join(map(str, paths)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from llamabench.records.results import format_table, write_run
    from llamabench.records.store import RunStore
    from llamabench.scale.merge import merge_runs

    store = RunStore.in_dir(_runs_folder(args))
    run = merge_runs([store.load(ref) for ref in args.runs], list(args.runs))
    folder = write_run(run, store.path.parent)
    store.add(run, folder)
    print(format_table(run.results))
    print(f"\nmerged run {run.manifest.run_id} written to {folder}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from llamabench.analysis.check import compare_runs, format_comparisons, parse_max_drops, unchecked, write_junit
    from llamabench.escaping import terminal
    from llamabench.records.store import RunStore

    max_drops = parse_max_drops(args.max_drop)
    store = RunStore.in_dir(_runs_folder(args))
    baseline, candidate = store.load(args.baseline), store.load(args.candidate)
    if args.exclude_contaminated is not None:
        from llamabench.analysis.subsets import clean_only

        baseline, candidate = (clean_only(run, args.exclude_contaminated) for run in (baseline, candidate))
    rows = compare_runs(
        baseline, candidate, max_drops=max_drops, alpha=args.alpha, iters=args.bootstrap_iters, seed=args.seed
    )
    left_out = unchecked(baseline, candidate)
    names = [f"{run.manifest.model} ({run.manifest.run_id})" for run in (candidate, baseline)]
    print(terminal(f"candidate {names[0]} vs baseline {names[1]}"))
    if args.exclude_contaminated is not None:
        print(terminal(f"clean documents only (< 20% contaminated in {args.exclude_contaminated})"))
    print()
    print(format_comparisons(rows, args.alpha, left_out))
    if args.junit:
        write_junit(rows, args.junit, f"llamabench check: {names[0]} vs {names[1]}", left_out)
    return int(any(row.failed for row in rows))


if __name__ == "__main__":
    sys.exit(main())
