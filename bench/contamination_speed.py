"""What a contamination scan costs: corpus tokens per second per core, and where the time goes.

Builds a corpus of ``--mb`` megabytes of English text (the WikiText-2 raw test file repeated, one copy per file,
so units split as on real shards), indexes the documents of ``--tasks`` (all of them), and scans the corpus with
``--workers`` processes in turn, alternating the sides ``--rounds`` times. Prints the index's size, and for each
worker count the scan's tokens per second in all and per worker; then tokenisation alone on one core (the share
of the scan that is the tokenizer) over the same text, and the peak memory of this process and of a worker.

    python bench/contamination_speed.py --mb 20 --workers 1 2 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from common import default_data_dir

from llamabench.contamination import corpus
from llamabench.contamination.criterion import DEFAULT_LENGTHS, PAPER_SKIP_BUDGET, SampleIndex
from llamabench.contamination.samples import task_texts, tokenize_samples
from llamabench.contamination.scan import overlap_bytes, scan
from llamabench.contamination.tokenizer import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--tasks", default="squad,wmt22-de-en,cnndm")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

    tokenizer = load_tokenizer(None)
    tick = time.perf_counter()
    texts = task_texts(args.tasks.split(","), data_dir=default_data_dir())
    samples = tokenize_samples(texts, tokenizer.load())
    # The default criterion: every length of the paper in one pass, its skip budget.
    index = SampleIndex([s.tokens for s in samples], DEFAULT_LENGTHS, [s.counted for s in samples], PAPER_SKIP_BUDGET)
    built = time.perf_counter() - tick
    index_mb = sum(a.nbytes for a in (index.keys, index.starts, index.entries, *index.samples)) / 1e6
    print(f"index: {len(samples)} documents, {len(index.keys)} distinct windows, {index_mb:.1f} MB, {built:.1f} s")

    source = (default_data_dir() / "wikitext2_raw_test" / "wiki.test.raw").read_text()
    with tempfile.TemporaryDirectory() as folder:
        copies = max(1, args.mb * 1_000_000 // len(source.encode()))
        files = []
        for copy in range(copies):
            path = Path(folder) / f"shard{copy:03d}.txt"
            path.write_text(source)
            files.append(path)
        overlap = overlap_bytes([s.text for s in samples], index.skip_budget, tokenizer.json)
        units = [unit for file in files for unit in corpus.units(file, overlap)]
        size = sum(f.stat().st_size for f in files) / 1e6
        print(f"corpus: {copies} files, {size:.1f} MB, {len(units)} units")
        for round_ in range(args.rounds):
            for workers in args.workers if round_ % 2 == 0 else args.workers[::-1]:
                tick = time.perf_counter()
                found = scan(units, tokenizer.json, index, "text", workers)
                seconds = time.perf_counter() - tick
                tokens = sum(found.tokens.values())
                rate = tokens / seconds
                print(
                    f"round {round_} workers {workers}: {tokens} tokens in {seconds:.1f} s = {rate / 1e6:.3f} M "
                    f"tokens/s, {rate / workers / 1e6:.3f} M tokens/s per worker"
                )
        tok = tokenizer.load()
        tick = time.perf_counter()
        count = sum(len(e.ids) for e in tok.encode_batch([source] * min(copies, 4), add_special_tokens=False))
        seconds = time.perf_counter() - tick
        print(f"tokenisation alone, one core: {count / seconds / 1e6:.3f} M tokens/s")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: this process {own:.0f} MB (index, samples, one in-process scan), a worker {workers:.0f} MB")


if __name__ == "__main__":
    main()
