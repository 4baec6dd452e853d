"""``llamabench run``: evaluate one or several checkpoints on tasks rendered once; and the evaluation options it
shares with ``llamabench watch``."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from llamabench.backends.loading import DEVICE_MAPS, KV_CACHES
from llamabench.errors import LlamabenchError
from llamabench.metrics.perplexity import WORD_RULES
from llamabench.runner import RunConfig
from llamabench.tasks.text_readers import TEXT_FORMATS


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"'{value}' is not 'auto' or a positive whole number")


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The flags that say what to evaluate and how (all but which model)."""
    parser.add_argument(
        "--tasks", default=None, help="comma-separated task names or aliases, e.g. ppl,bleu,rouge,qa (or give --text)"
    )
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="PATH",
        help="perplexity of a text file, folder or quoted glob, no task YAML needed (repeatable: one task each)",
    )
    parser.add_argument(
        "--text-format",
        choices=TEXT_FORMATS,
        default=None,
        help="--text documents: one per file (default), line or paragraph",
    )
    parser.add_argument(
        "--word-rule", choices=WORD_RULES, default=None, help="how --text tasks count words (default: lm_eval)"
    )
    parser.add_argument(
        "--allow-data-outside",
        action="store_true",
        help="let task YAMLs read data outside --data-dir (absolute paths, '..', symlinks)",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    parser.add_argument("--num-fewshot", type=int, default=None, help="override the tasks' few-shot count")
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        help="'auto' (token budget, backs off on out-of-memory) or a fixed number of sequences",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--device-map",
        choices=DEVICE_MAPS,
        default=None,
        help="spread one model over all visible GPUs with accelerate (not under torchrun)",
    )
    parser.add_argument(
        "--kv-cache",
        choices=KV_CACHES,
        default="dynamic",
        help="generation's key/value cache; 'static' lets transformers compile decoding (faster on GPU)",
    )
    parser.add_argument(
        "--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--max-length", type=int, default=None, help="context window in tokens (default: the model's)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("LLAMABENCH_DATA"),
        help="folder with local task data (default: $LLAMABENCH_DATA; without it: the hub)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs"), help="where result tables go (default: runs/)")
    parser.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")
    parser.add_argument(
        "--include-path", type=Path, action="append", default=[], help="extra folder of lm-eval task YAMLs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and bootstrap")
    parser.add_argument(
        "--bootstrap-iters", type=int, default=1000, help="bootstrap resamples for corpus-metric stderr"
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor store finished request results")
    parser.add_argument("--refresh", action="store_true", help="recompute every request, overwriting stored results")


def config_from_args(args: argparse.Namespace, model: str | None) -> RunConfig:
    """The run configuration the flags give, for ``model``; flags that conflict are refused here."""
    task_names = [name.strip() for name in (args.tasks or "").split(",") if name.strip()]
    if not task_names and not args.text:  # `--tasks ""` or `--tasks ,` would store an empty run
        raise LlamabenchError("nothing to run: pass --tasks NAMES, or --text PATH to score your own text files")
    if not args.text and (args.text_format or args.word_rule):
        raise LlamabenchError("--text-format and --word-rule apply to --text tasks; add --text PATH or drop them")
    if args.no_cache and args.refresh:
        raise LlamabenchError("--no-cache and --refresh conflict: --refresh recomputes and stores; pick one")
    return RunConfig(
        tasks=task_names,
        model=model,
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


def cache_mode(args: argparse.Namespace) -> str:
    return "off" if args.no_cache else "refresh" if args.refresh else "use"


def run_command(args: argparse.Namespace) -> int:
    from llamabench import orchestrator
    from llamabench.backends.preflight import check_before_loading
    from llamabench.backends.sharded import leave_ranks
    from llamabench.checkpoints import expand_models
    from llamabench.results import ensure_writable, format_table

    models = expand_models(args.model)
    config = orchestrator.join_ranks(config_from_args(args, models[0]))
    try:
        ensure_writable(config.output_dir)
        prepared = orchestrator.prepare(config, args.include_path)  # once, for every model
        cache = orchestrator.open_cache(cache_mode(args))
        for model in models:  # every checkpoint's small files, before any weights load
            check_before_loading(model, prepared.native, config.max_length)
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
                run_ids.append(run.manifest.run_id)
        if len(run_ids) > 1:
            print(f"\nruns: {' '.join(run_ids)} (pass them to `llamabench report` or `llamabench check`)")
    finally:
        leave_ranks()
    return 0
