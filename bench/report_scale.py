"""What `llamabench report` and the run store cost as runs pile up: peak memory and seconds of a report over N
synthetic runs, and the store's bytes per run.

Every run has the same ``--docs`` documents per task, each with a ``--prompt-chars`` long prompt (a reading
passage, as SQuAD has), as the runs of one training do. The store is built once with ``RunStore.add`` (the
code on ``PYTHONPATH``), then ``llamabench report`` runs in a child process whose peak RSS is read from
``getrusage``. Each timed step prints what it did beside its time: the runs the store holds after it, the runs
the report's pages name.

    PYTHONPATH=. python bench/report_scale.py --runs 200 --docs 500 --prompt-chars 2000

Measured on the 2-core build machine (defaults: 200 runs x 2 tasks x 500 documents, 2 MB of prompts per run):
before (d6e45e8) the store took 4.14 MB per run and `report` 8.7 s at 784 MB peak RSS; after, 0.34 MB per run
and 3.7 s at 304 MB (255 MB of it is the interpreter with pandas and torch: a 2-run report peaks at 255 MB).
At 400 runs, after: 5.1 s, 360 MB (the summaries and the HTML grow with the runs, the sample tables do not).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from common import Meter, TimedRun


def synthetic_run(index: int, docs: int, prompt_chars: int):
    """One run of a checkpoint at step ``index``: two tasks, one exact-match metric each."""
    from llamabench.records.results import RunResult, results_frame

    started = f"2025-01-01T{index // 3600:02d}:{index // 60 % 60:02d}:{index % 60:02d}+00:00"
    samples, rows = {}, []
    for task in ("squad", "triviaqa"):
        hits = [(i * 7 + index) % 3 == 0 for i in range(docs)]
        samples[task] = pd.DataFrame(
            {
                "doc_id": [f"doc{i}" for i in range(docs)],
                # The same passage in every run: the document text, not something the model wrote.
                "prompt": [(f"Passage {i} of {task}. " * prompt_chars)[:prompt_chars] for i in range(docs)],
                "prediction": [f"answer {i} at {index}" for i in range(docs)],
                "target": [json.dumps([f"answer {i}"]) for i in range(docs)],
                "exact_match": [float(hit) for hit in hits],
                "stats": [json.dumps({"exact_match": [float(hit)]}) for hit in hits],
            }
        )
        rows.append(
            {
                "model": f"checkpoint-{index}",
                "task": task,
                "metric": "exact_match",
                "value": sum(hits) / docs,
                "stderr": 0.01,
                "n": docs,
                "higher_is_better": True,
                "timestamp": started,
            }
        )
    manifest = {"run_id": f"run-{index:05d}", "model": f"checkpoint-{index}", "started": started, "step": index}
    return RunResult(results_frame(rows), samples, manifest)


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Print the figures; returns the store's and the report's timed runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--prompt-chars", type=int, default=2000)
    args = parser.parse_args(argv)
    from llamabench.records.store import RunStore

    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(scratch) / "runs"
        store = RunStore.in_dir(runs_dir)
        with Meter() as meter:
            for index in range(args.runs):
                store.add(synthetic_run(index, args.docs, args.prompt_chars))
        held = len(store.list())
        built = meter.record("store", "RunStore.add", args.runs, held, "runs stored", computed=held)
        size = store.path.stat().st_size
        text = 2 * args.docs * args.prompt_chars
        print(
            f"store: {args.runs} runs in {built.seconds:.1f} s, {size / 1e6:.1f} MB "
            f"({size / args.runs / 1e6:.2f} MB/run; "
        )
        print(f"       the prompts of one run are {text / 1e6:.2f} MB)")
        print(f"       {built.line()}")
        report = Path(scratch) / "report"
        argv = [sys.executable, "-m", "llamabench", "report", "--output-dir", str(runs_dir), "--out", str(report)]
        with Meter() as meter:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        pages = " ".join(page.read_text(errors="replace") for page in report.rglob("*") if page.is_file())
        named = sum(f"run-{index:05d}" in pages for index in range(args.runs))
        reported = meter.record("report", "llamabench report", args.runs, named, "runs named", computed=named)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kilobytes on Linux
        print(f"report: {reported.seconds:.1f} s, peak RSS {peak:.0f} MB ({reported.line()})")
    return [built, reported]


if __name__ == "__main__":
    main()
