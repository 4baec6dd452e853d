"""``llamabench run``: evaluate one or several checkpoints on tasks rendered once; and the evaluation options it
shares with ``llamabench watch``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llamabench.backends.registry import ENGINES
from llamabench.config import DEVICE_MAPS, KV_CACHES, TEXT_FORMATS, RunConfig
from llamabench.metrics.perplexity import WORD_RULES


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
    parser.add_argument(
        "--metrics-module",
        type=Path,
        action="append",
        default=[],
        metavar="FILE.py",
        help="a Python file defining your own metrics (docs/metrics.md), loaded before the tasks are read",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and bootstrap")
    parser.add_argument(
        "--bootstrap-iters", type=int, default=1000, help="bootstrap resamples for corpus-metric stderr"
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor store finished request results")
    parser.add_argument("--refresh", action="store_true", help="recompute every request, overwriting stored results")
    served = parser.add_argument_group("served models (--model http://HOST:PORT/v1; see docs/servers.md)")
    served.add_argument("--served-model", default=None, help="the server's model to evaluate (default: its only one)")
    served.add_argument(
        "--tokenizer", default=None, metavar="PATH", help="tokenize here with this tokenizer (default: the server's)"
    )
    served.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable holding the server's API key (default: OPENAI_API_KEY; never recorded)",
    )
    served.add_argument("--max-concurrent-requests", type=int, default=8, help="requests in flight (default: 8)")
    served.add_argument(
        "--request-timeout", type=float, default=120.0, help="seconds one request may take (default: 120)"
    )
    served.add_argument(
        "--request-retries", type=int, default=5, help="retries on 429, 5xx, timeouts and bad answers (default: 5)"
    )
    parser.add_argument(
        "--log-to",
        action="append",
        default=[],
        metavar="NAME",
        help="also log results to mlflow, wandb or tensorboard, configured by their own variables (repeatable)",
    )

    add_engine_options(parser)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Which engine runs the model, and the vLLM engine's own options (docs/engines.md)."""
    parser.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="hf",
        help="transformers in-process (hf, default), vLLM (vllm), or a served model (server; a --model URL implies it)",
    )
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: split one model over this many GPUs")
    parser.add_argument(
        "--data-parallel-size", type=int, default=1, help="vllm: model replicas (only 1 in one process today)"
    )
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="vllm: share of GPU memory (of host memory on CPU) it reserves (default: 0.9 on GPU, 0.15 on CPU)",
    )
    parser.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs (slower, starts faster)")


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    """``run``'s flags that spread one run over machines (a watch evaluates each checkpoint whole, here)."""
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N|auto",
        help="evaluate shard I (from 0) of N of every task's documents, a partial run for `llamabench merge` "
        "(auto: a Slurm array's task)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS|local",
        help="run the requests on a Ray cluster (local: start one here); needs pip install 'llamabench[ray]'",
    )


def run_command(args: argparse.Namespace) -> int:
    from llamabench.distributed import leave_ranks
    from llamabench.pipeline import Evaluation
    from llamabench.records.results import format_table
    from llamabench.training.checkpoints import expand_models

    config = RunConfig.from_args(args)
    contamination = getattr(args, "contamination", None)  # presentation only: not a setting of the run
    if contamination is not None:
        from llamabench.contamination.result import read_contamination

        read_contamination(contamination)  # a wrong folder fails before any model loads
    models = expand_models(config.model)
    evaluation = None
    try:
        evaluation = Evaluation.prepare(config)  # tasks rendered once, for every model
        evaluation.check_before_loading(models)  # every checkpoint's small files, before any weights load
        run_ids = []
        if evaluation.config.ray is not None and len(models) > 1:
            from llamabench.scale.ray_backend import run_checkpoints

            runs = run_checkpoints(evaluation, models)  # in parallel, over the cluster's free slots
        else:  # one after another: each backend is freed before the next checkpoint loads
            runs = (evaluation.run_checkpoint(model) for model in models)
        for run in runs:
            folder = evaluation.record(run)
            if folder is not None:
                print(format_table(run.results))
                print(f"\nresults written to {folder}")
                if contamination is not None:
                    from llamabench.cli.contamination import report_subsets

                    report_subsets([run], contamination, None)
                run_ids.append(run.manifest.run_id)
        if len(run_ids) > 1:
            print(f"\nruns: {' '.join(run_ids)} (pass them to `llamabench report` or `llamabench check`)")
    finally:
        if evaluation is not None:
            evaluation.trackers.finish()
        leave_ranks()
    return 0
