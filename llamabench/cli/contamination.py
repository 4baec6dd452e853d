"""``llamabench contamination``: which evaluation documents a training corpus holds (see ``contamination/``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llamabench.contamination.criterion import DEFAULT_LENGTHS, PAPER_SKIP_BUDGET


def add_contamination_parser(commands) -> None:
    scan = commands.add_parser(
        "contamination", help="per-document contamination of tasks by a training corpus (LLaMA 2 criterion)"
    )
    scan.add_argument(
        "--corpus",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="training text: files, folders or quoted globs (.txt and other text, .jsonl, .parquet)",
    )
    scan.add_argument("--tasks", default="", help="comma-separated task names, as for `run`")
    scan.add_argument(
        "--text", action="append", default=[], metavar="PATH", help="your own evaluation text files, as for `run`"
    )
    scan.add_argument("--text-format", default=None, help="how --text files are cut into documents, as for `run`")
    scan.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("LLAMABENCH_DATA"),
        help="folder with local task data (default: $LLAMABENCH_DATA)",
    )
    scan.add_argument("--tasks-dir", type=Path, action="append", default=[], help="extra folder of task YAML files")
    scan.add_argument(
        "--output-dir",
        type=Path,
        default=Path("contamination"),
        help="where the result folder goes (default: contamination/)",
    )
    scan.add_argument("--model", default=None, help="whose tokenizer to use (default: smollm2-135m; no weights load)")
    scan.add_argument(
        "--field", default="text", help="the text field of JSONL records and Parquet rows (default: text)"
    )
    scan.add_argument(
        "--lengths",
        default=",".join(map(str, DEFAULT_LENGTHS)),
        metavar="L,L,...",
        help="minimum match lengths, all in one pass, a table each (default "
        f"{','.join(map(str, DEFAULT_LENGTHS))}: the paper's)",
    )
    scan.add_argument(
        "--longer-than",
        action="store_true",
        help="a span counts when longer than L (the paper's 'longer than 10 tokens'), not at least L ('10(+)')",
    )
    budget = scan.add_mutually_exclusive_group()
    budget.add_argument(
        "--skip-budget",
        type=int,
        default=PAPER_SKIP_BUDGET,
        help=f"positions a matched span may differ in (default {PAPER_SKIP_BUDGET}: the paper's)",
    )
    budget.add_argument(
        "--exact", dest="skip_budget", action="store_const", const=0, help="exact match (--skip-budget 0)"
    )
    scan.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="scan on a Ray cluster (local: start one here); needs pip install 'llamabench[ray]'",
    )
    scan.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    scan.add_argument("--limit", type=int, default=None, help="only the first N documents of each task")


def _lengths(value: str) -> tuple[int, ...]:
    from llamabench.errors import LlamabenchError

    try:
        return tuple(int(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise LlamabenchError(f"--lengths {value} is not a comma-separated list of token counts (e.g. 10,20)") from None


def contamination_command(args: argparse.Namespace) -> int:
    from llamabench.contamination.criterion import SUBSETS
    from llamabench.contamination.result import ScanSettings, contamination_tables, write_contamination
    from llamabench.escaping import terminal
    from llamabench.records.results import ensure_writable

    settings = ScanSettings(
        corpus=args.corpus,
        tasks=[name.strip() for name in args.tasks.split(",") if name.strip()],
        data_dir=args.data_dir,
        tasks_dir=tuple(args.tasks_dir),
        model=args.model,
        field=args.field,
        lengths=_lengths(args.lengths),
        skip_budget=args.skip_budget,
        longer_than=args.longer_than,
        ray=args.ray,
        workers=args.workers,
        limit=args.limit,
        text=tuple(args.text),
        text_format=args.text_format,
    )
    ensure_writable(args.output_dir)  # before the scan, not after it
    tables, manifest = contamination_tables(settings)
    folder = write_contamination(tables, manifest, args.output_dir)
    for task, table in tables.items():
        for length, rows in table.groupby("min_length"):
            counts = ", ".join(f"{subset} {int(rows[subset].sum())}" for subset in SUBSETS)
            print(
                terminal(
                    f"{task} L={length}: {len(rows)} documents; {counts}; undetectable {int((~rows.detectable).sum())}"
                    f"; longest span {int(rows.longest_span.max())} tokens"
                )
            )
    tokens = sum(item["tokens"] for item in manifest["corpus"])
    print(terminal(f"corpus: {len(manifest['corpus'])} file(s), {tokens} tokens in {manifest['scan']['seconds']} s"))
    print(terminal(f"contamination written to {folder}"))
    return 0


def report_subsets(runs: list, contamination: Path, out: Path | None) -> list[Path]:
    """Print each run's scores by subset and write them as ``subsets_<run id>.csv`` under ``out`` (if given)."""
    from llamabench import escaping
    from llamabench.analysis.subsets import format_subsets, subset_scores
    from llamabench.escaping import terminal

    paths = []
    for run in runs:
        scores = subset_scores(run, contamination)
        print(terminal(f"{run.manifest.model} ({run.manifest.run_id}) by contamination subset:"))
        print(format_subsets(scores) + "\n")
        if out is None:
            continue
        path = Path(out) / f"subsets_{escaping.safe_name(run.manifest.run_id)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        escaping.csv_frame(scores).to_csv(path, index=False)
        paths.append(path)
    return paths
