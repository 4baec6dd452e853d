"""Multiple choice head-to-head with lm-eval's HF backend, two jobs built from the shared data:

- SQuAD answer sentence: a SQuAD v1.1 paragraph and question, then the paragraph's sentence holding the answer among
  three other sentences of the same paragraph (seeded). A long shared context, short choices: the shape of few-shot
  and reading-comprehension multiple choice.
- WMT22 reference: "German: {source}\\nEnglish:", then the segment's English reference among the references of three
  other segments (seeded). Context and choices about as long as each other: little to share.

lm-eval 0.4.13's ``HFLM`` and llamabench's backend score the same requests on the same model object (fp32),
alternating slice by slice, after a warm-up on two other questions outside the timing; neither side has a request
cache here. The script prints each side's wall time, the ratio (bench/common.py's rule), both accuracies, the
largest relative difference between their log-likelihoods, and each side's counters (requests that reached it,
forward passes and positions of the shared model).

    python bench/mc_vs_lm_eval.py [--data-dir ../shared/data] [--questions 48] [--lm-eval-batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
from pathlib import Path

import torch
from common import (
    LLAMABENCH_METHODS,
    LM_EVAL_METHODS,
    Meter,
    TimedRun,
    compare,
    default_data_dir,
    instances,
    total,
)

from llamabench.backends.hf.backend import HFBackend
from llamabench.requests import LoglikelihoodRequest

N_CHOICES = 4


def squad_questions(data_dir: Path, n: int, seed: int) -> list[dict]:
    """The first ``n`` SQuAD questions whose paragraph has at least four sentences, each asking for the sentence
    that holds its first answer among three other sentences of the paragraph."""
    rng = random.Random(seed)
    built = []
    for line in (data_dir / "squad_v1.1_dev" / "dev.jsonl").read_text().splitlines():
        row = json.loads(line)
        sentences = [m for m in re.finditer(r"[^.!?]+[.!?]+", row["context"]) if m.group().strip()]
        holding = [m for m in sentences if m.start() <= row["answer_starts"][0] < m.end()]
        if len(sentences) < N_CHOICES or not holding:
            continue
        answer = holding[0].group().strip()
        others = rng.sample([m.group().strip() for m in sentences if m is not holding[0]], N_CHOICES - 1)
        choices = [answer, *others]
        rng.shuffle(choices)
        context = f"{row['context']}\n\nQuestion: {row['question']}\nThe sentence that answers it:"
        built.append({"context": context, "choices": choices, "label": choices.index(answer)})
        if len(built) == n:
            break
    return built


def wmt_questions(data_dir: Path, n: int, seed: int) -> list[dict]:
    """The first ``n`` segments, each with its reference shuffled among three other segments' references."""
    path = data_dir / "wmt22_generaltest_de-en" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()][:n]
    rng = random.Random(seed)
    built = []
    for i, row in enumerate(rows):
        others = rng.sample([r["reference"] for j, r in enumerate(rows) if j != i], N_CHOICES - 1)
        choices = [row["reference"], *others]
        rng.shuffle(choices)
        built.append(
            {
                "context": f"German: {row['source']}\nEnglish:",
                "choices": choices,
                "label": choices.index(row["reference"]),
            }
        )
    return built


def pairs(docs: list[dict]) -> list[tuple[str, str]]:
    return [(doc["context"], " " + choice) for doc in docs for choice in doc["choices"]]


def accuracy(docs: list[dict], scores: list[float]) -> float:
    """Share of questions whose highest-scoring choice is the reference (lm-eval's ``acc``)."""
    right = 0
    for q, doc in enumerate(docs):
        own = scores[q * N_CHOICES : (q + 1) * N_CHOICES]
        right += max(range(N_CHOICES), key=own.__getitem__) == doc["label"]
    return right / len(docs)


def interleaved(job: str, sides: dict, arguments: list[tuple[str, str]], rounds: int) -> dict[str, tuple]:
    """Each side's run (its slices' times and counters summed) and scores over ``rounds`` slices of whole
    questions, the sides alternating slice by slice, so that load from other processes on a shared machine falls
    on both alike. ``sides``: name -> (score function, Meter settings)."""
    per_round = -(-len(arguments) // (rounds * N_CHOICES)) * N_CHOICES
    slices: dict[str, list[TimedRun]] = {name: [] for name in sides}
    scores: dict[str, list[float]] = {name: [] for name in sides}
    for start in range(0, len(arguments), per_round):
        chunk = arguments[start : start + per_round]
        for name, (score, counted) in sides.items():
            with Meter(**counted) as meter:
                got = score(chunk)
            slices[name].append(meter.record(job, name, len(chunk), len(got), "choices scored"))
            scores[name] += got
    return {name: (total(slices[name]), scores[name]) for name in sides}


JOBS = {"SQuAD answer sentence": squad_questions, "WMT22 reference": wmt_questions}


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Both jobs, each side's counters and the table; returns every side's run of each job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--questions", type=int, default=48, help="per job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4, help="slices the two sides alternate on")
    parser.add_argument("--lm-eval-batch-size", type=int, default=16, help="its 'auto' needs CUDA")
    args = parser.parse_args(argv)

    from lm_eval.models.huggingface import HFLM

    backend = HFBackend.load(args.model, device="cpu", dtype="float32")  # no request cache: the backend itself
    backend.progress = False
    peer = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=args.lm_eval_batch_size)

    def lm_eval_scores(arguments):
        return [value for value, _ in peer.loglikelihood(instances("loglikelihood", arguments), disable_tqdm=True)]

    def llamabench_scores(arguments):
        return [value for value, _ in backend.loglikelihood([LoglikelihoodRequest(c, x) for c, x in arguments])]

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, fp32 CPU; lm-eval batch size {args.lm_eval_batch_size}, "
        "llamabench batch size auto\n"
    )
    print(
        "| job | questions | tokens unshared | lm-eval s | llamabench s | speed-up | lm-eval acc | llamabench acc "
        "| max rel. diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    runs, notes = [], []
    for job, build in JOBS.items():
        docs = build(args.data_dir, args.questions, args.seed)
        warm_up = pairs(build(args.data_dir, args.questions + 2, args.seed + 1)[-2:])  # two unseen questions
        for score in (lm_eval_scores, llamabench_scores):
            score(warm_up)
        sides = {
            "lm-eval": (lm_eval_scores, {"model": backend.model, "answerer": peer, "methods": LM_EVAL_METHODS}),
            "llamabench": (
                llamabench_scores,
                {"model": backend.model, "answerer": backend, "methods": LLAMABENCH_METHODS},
            ),
        }
        totals = interleaved(job, sides, pairs(docs), args.rounds)
        print(row(job, backend, docs, totals["lm-eval"], totals["llamabench"]))
        notes += [totals["lm-eval"][0].line(), totals["llamabench"][0].line()]
        runs += [totals["lm-eval"][0], totals["llamabench"][0]]
    print("\n" + "\n".join(notes))
    return runs


def row(job: str, backend: HFBackend, docs: list[dict], theirs: tuple, mine: tuple) -> str:
    """The job's table row: sizes, both sides' seconds and accuracy, the speed-up (or why there is none), the
    largest relative log-likelihood gap."""
    (theirs_run, their_scores), (mine_run, my_scores) = theirs, mine
    tokens = sum(len(backend.tokenizer(c + x, add_special_tokens=False).input_ids) for c, x in pairs(docs))
    rel = max(abs(a - b) / abs(b) for a, b in zip(my_scores, their_scores, strict=True))
    speed_up = compare("speed-up", theirs_run, mine_run)
    ratio = f"{speed_up.ratio:.2f}x" if speed_up.ratio is not None else speed_up.line()
    return (
        f"| {job} among {N_CHOICES} | {len(docs)} | {tokens} | {theirs_run.seconds:.1f} | {mine_run.seconds:.1f} | "
        f"{ratio} | {accuracy(docs, their_scores):.4f} | {accuracy(docs, my_scores):.4f} | {rel:.1e} |"
    )


if __name__ == "__main__":
    main()
