"""Command line: ``llamabench run``, ``tasks``, ``runs``, ``report`` and ``check``."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from llamabench import __version__
from llamabench.backends.loading import DEVICE_MAPS, KV_CACHES
from llamabench.errors import LlamabenchError, first_line
from llamabench.escaping import terminal
from llamabench.metrics.perplexity import WORD_RULES
from llamabench.tasks.text_readers import TEXT_FORMATS


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"'{value}' is not 'auto' or a positive whole number")


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
        help="model directory, .gguf file, hub id, alias or quoted glob (default: smollm2-135m); repeat for several",
    )
    run.add_argument(
        "--tasks", default=None, help="comma-separated task names or aliases, e.g. ppl,bleu,rouge,qa (or give --text)"
    )
    run.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="PATH",
        help="perplexity of a text file, folder or quoted glob, no task YAML needed (repeatable: one task each)",
    )
    run.add_argument(
        "--text-format",
        choices=TEXT_FORMATS,
        default=None,
        help="--text documents: one per file (default), line or paragraph",
    )
    run.add_argument(
        "--word-rule", choices=WORD_RULES, default=None, help="how --text tasks count words (default: lm_eval)"
    )
    run.add_argument(
        "--allow-data-outside",
        action="store_true",
        help="let task YAMLs read data outside --data-dir (absolute paths, '..', symlinks)",
    )
    run.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    run.add_argument("--num-fewshot", type=int, default=None, help="override the tasks' few-shot count")
    run.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        help="'auto' (token budget, backs off on out-of-memory) or a fixed number of sequences",
    )
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument(
        "--device-map",
        choices=DEVICE_MAPS,
        default=None,
        help="spread one model over all visible GPUs with accelerate (not under torchrun)",
    )
    run.add_argument(
        "--kv-cache",
        choices=KV_CACHES,
        default="dynamic",
        help="generation's key/value cache; 'static' lets transformers compile decoding (faster on GPU)",
    )
    run.add_argument(
        "--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on GPU, float32 on CPU)"
    )
    run.add_argument("--max-length", type=int, default=None, help="context window in tokens (default: the model's)")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("LLAMABENCH_DATA"),
        help="folder with local task data (default: $LLAMABENCH_DATA; without it: the hub)",
    )
    run.add_argument("--output-dir", type=Path, default=Path("runs"), help="where result tables go (default: runs/)")
    run.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")
    run.add_argument(
        "--include-path", type=Path, action="append", default=[], help="extra folder of lm-eval task YAMLs"
    )
    run.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and bootstrap")
    run.add_argument("--bootstrap-iters", type=int, default=1000, help="bootstrap resamples for corpus-metric stderr")
    run.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    run.add_argument("--no-cache", action="store_true", help="neither read nor store finished request results")
    run.add_argument("--refresh", action="store_true", help="recompute every request, overwriting stored results")

    tasks = commands.add_parser("tasks", help="list the available tasks and their metrics")
    tasks.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--results-dir", type=Path, default=Path("runs"), help="the run's --output-dir holding llamabench.sqlite"
    )
    commands.add_parser("runs", parents=[store], help="list the runs recorded in the results folder")
    report = commands.add_parser("report", parents=[store], help="leaderboard of runs: CSV, Markdown and HTML")
    report.add_argument("runs", nargs="*", metavar="RUN", help="run ids, unique prefixes or folders (default: all)")
    report.add_argument("--out", type=Path, default=Path("reports"), help="report folder (default: reports/)")
    report.add_argument("--label", action="append", default=[], metavar="RUN=LABEL", help="a run's name and x")
    check = commands.add_parser("check", parents=[store], help="fail when a candidate run regresses on a baseline")
    check.add_argument("--baseline", required=True, metavar="RUN", help="run id, unique prefix or folder")
    check.add_argument("--candidate", required=True, metavar="RUN", help="run id, unique prefix or folder")
    check.add_argument(
        "--max-drop", action="append", default=[], metavar="METRIC=VALUE|PCT%", help="allowed drop (default 0)"
    )
    check.add_argument("--alpha", type=float, default=0.05, help="significance level of the one-sided tests")
    check.add_argument("--junit", type=Path, default=None, help="write JUnit XML here")
    check.add_argument("--bootstrap-iters", type=int, default=1000, help="paired bootstrap resamples")
    check.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": _run, "tasks": _list_tasks, "runs": _list_runs, "report": _report, "check": _check}
    try:
        return handlers[args.command](args)
    except (LlamabenchError, *_ENVIRONMENT_ERRORS) as exc:
        if args.debug:
            raise
        print(f"llamabench: error: {terminal(_one_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llamabench: interrupted; finished request results are kept in the cache", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (the last line of defence: one line, the traceback on --debug)
        if args.debug:
            raise
        reason = terminal(f"{type(exc).__name__}: {first_line(exc)}")
        print(
            f"llamabench: error: unexpected {reason}; if the input looks right, this is a llamabench bug: rerun "
            "with --debug and report the traceback",
            file=sys.stderr,
        )
        return 2


# Failures of the machine or of files rather than of llamabench (a full or read-only disk, a corrupt SQLite
# file, undecodable bytes): said in one line naming the thing, as bad input is.
_ENVIRONMENT_ERRORS = (OSError, sqlite3.Error, UnicodeError, MemoryError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, LlamabenchError):
        return " ".join(str(exc).split("\n"))
    if isinstance(exc, OSError) and exc.filename:
        reason = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    return f"{reason}; check the disk, the path and its permissions (--debug shows where it happened)"


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from llamabench import orchestrator
    from llamabench.backends.sharded import leave_ranks
    from llamabench.checkpoints import expand_models
    from llamabench.results import ensure_writable, format_table
    from llamabench.runner import RunConfig

    task_names = [name.strip() for name in (args.tasks or "").split(",") if name.strip()]
    if not task_names and not args.text:  # `--tasks ""` or `--tasks ,` would store an empty run
        raise LlamabenchError("nothing to run: pass --tasks NAMES, or --text PATH to score your own text files")
    if not args.text and (args.text_format or args.word_rule):
        raise LlamabenchError("--text-format and --word-rule apply to --text tasks; add --text PATH or drop them")
    if args.no_cache and args.refresh:
        raise LlamabenchError("--no-cache and --refresh conflict: --refresh recomputes and stores; pick one")
    models = expand_models(args.model)
    config = RunConfig(
        tasks=task_names,
        model=models[0],
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        device=args.device,
        device_map=args.device_map,
        kv_cache=args.kv_cache,
        dtype=args.dtype,
        max_length=args.max_length,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        tasks_dirs=args.tasks_dir,
        seed=args.seed,
        bootstrap_iters=args.bootstrap_iters,
        allow_data_outside=args.allow_data_outside,
        texts=args.text,
        text_format=args.text_format or "text",
        text_word_rule=args.word_rule or "lm_eval",
    )
    config = orchestrator.join_ranks(config)
    try:
        ensure_writable(config.output_dir)
        prepared = orchestrator.prepare(config, args.include_path)  # once, for every model
        cache = orchestrator.open_cache("off" if args.no_cache else "refresh" if args.refresh else "use")
        run_ids = []
        for model in models:
            model_config = replace(config, model=model)
            backend = orchestrator.load_checkpoint(model_config, trust_remote_code=args.trust_remote_code)
            served = orchestrator.serve(backend, cache, refresh=args.refresh, layout="replicated")
            run = orchestrator.evaluate(served, prepared, model_config)
            del backend, served  # the next checkpoint loads into the memory this one frees
            folder = orchestrator.record(run, config.output_dir)
            if folder is not None:
                print(format_table(run.results))
                print(f"\nresults written to {folder}")
                run_ids.append(run.manifest["run_id"])
        if len(run_ids) > 1:
            print(f"\nruns: {' '.join(run_ids)} (pass them to `llamabench report` or `llamabench check`)")
    finally:
        leave_ranks()
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
    from llamabench.results import terminal_table
    from llamabench.store import RunStore

    store = RunStore.in_dir(args.results_dir)
    runs, notes = store.listing()
    print(terminal_table(runs) if len(runs) else f"no runs recorded in {store.path}")
    _print_notes(notes)
    return 0


def _print_notes(notes: list[str]) -> None:
    from llamabench.escaping import terminal

    for note in notes:
        print(f"llamabench: note: {terminal(note)}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    from llamabench.report import parse_labels, write_report
    from llamabench.store import RunStore

    store = RunStore.in_dir(args.results_dir)
    runs, notes = store.gather(args.runs)
    _print_notes(notes)
    paths = write_report(runs, args.out, parse_labels(args.label, store.resolve))
    print("report written to " + ", ".join(map(str, paths)))
    return 0


def _check(args: argparse.Namespace) -> int:
    from llamabench.compare import compare_runs, format_comparisons, parse_max_drops, unchecked, write_junit
    from llamabench.escaping import terminal
    from llamabench.store import RunStore

    max_drops = parse_max_drops(args.max_drop)
    store = RunStore.in_dir(args.results_dir)
    baseline, candidate = store.load(args.baseline), store.load(args.candidate)
    rows = compare_runs(
        baseline, candidate, max_drops=max_drops, alpha=args.alpha, iters=args.bootstrap_iters, seed=args.seed
    )
    left_out = unchecked(baseline, candidate)
    names = [f"{run.manifest.get('model')} ({run.manifest['run_id']})" for run in (candidate, baseline)]
    print(terminal(f"candidate {names[0]} vs baseline {names[1]}") + "\n")
    print(format_comparisons(rows, args.alpha, left_out))
    if args.junit:
        write_junit(rows, args.junit, f"llamabench check: {names[0]} vs {names[1]}", left_out)
    return int(any(row.regression for row in rows))


if __name__ == "__main__":
    sys.exit(main())
