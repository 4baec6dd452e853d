"""Command line: ``llamabench run`` and ``llamabench tasks``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llamabench import __version__
from llamabench.errors import LlamabenchError


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"'{value}' is not 'auto' or a positive whole number")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamabench", description="Evaluate LLaMA-family checkpoints.")
    parser.add_argument("--version", action="version", version=f"llamabench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="evaluate a model on tasks")
    run.add_argument(
        "--model", default=None, help="model directory, .gguf file, hub id or alias (default: smollm2-135m)"
    )
    run.add_argument("--tasks", required=True, help="comma-separated task names or aliases, e.g. ppl,bleu,rouge,qa")
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
    run.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and bootstrap")
    run.add_argument("--bootstrap-iters", type=int, default=1000, help="bootstrap resamples for corpus-metric stderr")
    run.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")

    tasks = commands.add_parser("tasks", help="list the available tasks and their metrics")
    tasks.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        return _list_tasks(args)
    except LlamabenchError as exc:
        if args.debug:
            raise
        print(f"llamabench: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from llamabench.backends.hf import HFBackend
    from llamabench.results import format_table, write_run
    from llamabench.runner import RunConfig, evaluate, prepare_tasks

    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise LlamabenchError(f"--num-fewshot {args.num_fewshot} must be 0 or more")
    config = RunConfig(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        model=args.model,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        tasks_dirs=args.tasks_dir,
        seed=args.seed,
        bootstrap_iters=args.bootstrap_iters,
    )
    tasks = prepare_tasks(config)
    backend = HFBackend.load(
        config.model,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
        max_length=config.max_length,
        trust_remote_code=args.trust_remote_code,
    )
    run = evaluate(backend, tasks, config)
    folder = write_run(run, config.output_dir)
    print(format_table(run.results))
    print(f"\nresults written to {folder}")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    from llamabench.tasks import registry

    specs = {id(s): s for s in registry.discover(registry.task_dirs(args.tasks_dir)).values()}.values()
    for spec in sorted(specs, key=lambda s: s.name):
        aliases = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{spec.name}{aliases}  [{spec.kind}]  metrics: {', '.join(spec.metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
