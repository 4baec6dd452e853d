"""Head-to-head with lm-eval's HF backend: same model, data, prompts and limits, one process.

Three jobs, each run by lm-eval 0.4.13 (its own task machinery and HF backend, on local copies of the
documents) and then by llamabench, interleaved so that machine load falls on both sides alike (generation jobs
run ``--repeats`` times per side, alternating, and the faster of each side's runs that computed all their work
counts):
WikiText-2 rolling perplexity, greedy SQuAD answers (prefill-heavy: long prompts, 32 new tokens) and
greedy WMT22 de-en translation (generation-heavy: 128 new tokens, stop at a newline). Prints wall time,
tokens/s, the useful fraction of computed row-steps, agreement, and the speed ratio; every generation
that differs is shown with the top-2 logit gap where the two diverge. Every timed run computes: llamabench without
its request cache, lm-eval without its own, each converting the documents itself; each run's counters (requests
that reached the model, forward passes, positions) are printed beside its time, and the ratio only where both sides
did the same full work (bench/common.py).

    python bench/vs_lm_eval.py --data-dir ../shared/data [--jobs ppl,squad,wmt] [--ppl-docs 62]

With ``--ppl-docs 62`` the lm-eval figures are the ones ``tests/test_real_model.py`` pins.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from common import GENERATION_TOLERANCE, LLAMABENCH_METHODS, LM_EVAL_METHODS, Meter, TimedRun, compare, fastest

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.gguf import dense_copy_dir
from llamabench.backends.loading.load import load_model_and_tokenizer
from llamabench.backends.loading.model_source import fingerprint, resolve_model
from llamabench.config import KV_CACHES, RunConfig
from llamabench.pipeline import Evaluation
from llamabench.tasks.data import read_jsonl, read_wikitext_documents

QA_PROMPT = "{{ context }}\n\nQ: {{ question }}\nA (a short span copied from the text above):"
WMT_PROMPT = "Translate the following German text into English.\nGerman: {{ source }}\nEnglish:"
# force_redownload: every run converts the documents itself, none reads the arrow copy an earlier run left
LOCAL_JSON = """\
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}, download_mode: force_redownload}}
test_split: test
"""
LM_EVAL_PPL = """\
task: bench_wikitext
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: !function hooks.wikitext_detokenizer
process_results: !function hooks.process_results
metric_list: [{{metric: word_perplexity}}, {{metric: byte_perplexity}}, {{metric: bits_per_byte}}]
"""
LM_EVAL_GEN = """\
task: {name}
output_type: generate_until
doc_to_text: {prompt}
doc_to_target: {target}
generation_kwargs: {{until: {until}, max_gen_toks: {max_tokens}, do_sample: false}}
metric_list: [{{metric: exact_match}}]
"""
HOOKS = "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"
LLAMABENCH_GEN = """\
name: {name}
kind: generate
dataset: {{local: {name}.jsonl}}
doc_id: "{{{{ id }}}}"
prompt: {prompt}
target: {target}
generation: {{max_new_tokens: {max_tokens}, until: {until}}}
metrics: [exact_match]
"""


@dataclass(frozen=True)
class GenerationJob:
    """A greedy generation task as both harnesses run it; ``flag`` names it in ``--jobs``."""

    flag: str
    name: str
    prompt: str
    target_lm_eval: str
    target_llamabench: str
    until: tuple[str, ...]
    max_tokens: int

    def write(self, folder: Path, documents: list[dict]) -> None:
        data = folder / f"{self.name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in documents))
        fields = {"name": self.name, "prompt": json.dumps(self.prompt), "until": json.dumps(list(self.until))}
        fields["max_tokens"] = self.max_tokens
        (folder / f"{self.name}.yaml").write_text(
            (LM_EVAL_GEN + LOCAL_JSON).format(data=data, target=json.dumps(self.target_lm_eval), **fields)
        )
        (folder / "llamabench_tasks" / f"{self.name}.yaml").write_text(
            LLAMABENCH_GEN.format(target=json.dumps(self.target_llamabench), **fields)
        )


SQUAD = GenerationJob("squad", "bench_qa", QA_PROMPT, "{{ answers[0] }}", "{{ answers }}", ("\n", "Q:"), 32)
WMT = GenerationJob("wmt", "bench_wmt", WMT_PROMPT, "{{ reference }}", "{{ reference }}", ("\n",), 128)


def write_inputs(folder: Path, args: argparse.Namespace) -> None:
    (folder / "llamabench_tasks").mkdir()
    pages = read_wikitext_documents(args.data_dir / "wikitext2_raw_test" / "wiki.test.raw")[: args.ppl_docs]
    (folder / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    (folder / "wikitext2_raw_test").mkdir()
    (folder / "wikitext2_raw_test" / "wiki.test.raw").write_text("\n".join(p["page"] for p in pages))
    (folder / "bench_wikitext.yaml").write_text((LM_EVAL_PPL + LOCAL_JSON).format(data=folder / "pages.jsonl"))
    (folder / "hooks.py").write_text(HOOKS)
    SQUAD.write(folder, read_jsonl(args.data_dir / "squad_v1.1_dev" / "dev.jsonl")[: args.qa_docs])
    WMT.write(folder, read_jsonl(args.data_dir / "wmt22_generaltest_de-en" / "test.jsonl")[: args.wmt_docs])


def run_lm_eval(folder: Path, pretrained: str, args: argparse.Namespace, task: str, batch_size: str) -> dict:
    """One lm-eval task with its request cache off, timed with its counters (requests reaching the model, forward
    passes, positions); also counts the row-steps its HF ``generate`` computed (rows x steps per batch)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = HFLM(pretrained=pretrained, device=args.device, dtype=args.dtype, batch_size=batch_size)
    row_steps = [0]
    generate = model._model_generate

    def counted(context, *a, **kw):
        out = generate(context, *a, **kw)
        row_steps[0] += out.shape[0] * (out.shape[1] - context.shape[1])
        return out

    model._model_generate = counted
    with Meter(model=model.model, answerer=model, methods=LM_EVAL_METHODS) as meter:
        out = lm_eval.simple_evaluate(
            model=model,
            tasks=[task],
            # its index of our folder only, as llamabench reads only its tasks folder (its ~13,000 built-in task
            # files are start-up, not evaluation)
            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
            use_cache=None,  # its request cache: off
            cache_requests=False,
        )
    results = {k.split(",")[0]: v for k, v in out["results"][task].items() if "," in k and "stderr" not in k}
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return {"meter": meter, "results": results, "samples": samples, "row_steps": row_steps[0], "model": model}


def run_llamabench(backend: HFBackend, folder: Path, task: str) -> dict:
    config = RunConfig(
        tasks=[task], data_dir=folder, tasks_dir=[folder / "llamabench_tasks"], num_fewshot=0, bootstrap_iters=0,
        no_cache=True,  # every timed run computes; the request cache would answer a repeat from the first run
    )  # fmt: skip
    stats = backend.engine.stats
    before = (stats.row_steps, stats.drafted, stats.accepted)
    # like lm-eval's timing, this includes loading and rendering the documents
    with Meter(model=backend.model, answerer=backend, methods=LLAMABENCH_METHODS) as meter:
        run = Evaluation.prepare(config).run_backend(backend)
    return {
        "meter": meter,
        "run": run,
        "row_steps": stats.row_steps - before[0],
        "drafted": stats.drafted - before[1],
        "accepted": stats.accepted - before[2],
    }


def divergence_gap(backend: HFBackend, prompt: str, ours: str, theirs: str) -> tuple[int, float]:
    """Where two continuations of ``prompt`` first differ (in tokens), and the top-2 logit gap there, computed
    for the one sequence alone."""
    encode = backend.tokens.encode
    mine, other = encode(ours), encode(theirs)
    common = next((k for k, (a, b) in enumerate(zip(mine, other, strict=False)) if a != b), min(len(mine), len(other)))
    with torch.inference_mode():
        ids = torch.tensor([encode(prompt) + mine[:common]], device=backend.device)
        top = backend.model(input_ids=ids).logits[0, -1].float().topk(2).values
    return common, float(top[0] - top[1])


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Run the jobs and print their figures; returns every timed run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--jobs", default="ppl,squad,wmt", help="comma-separated: ppl, squad, wmt")
    parser.add_argument("--ppl-docs", type=int, default=8)
    parser.add_argument("--qa-docs", type=int, default=64)
    parser.add_argument("--wmt-docs", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache", choices=KV_CACHES, default="dynamic", help="llamabench's generation cache")
    # lm-eval at its best setting: 'auto' on GPU. On CPU its auto-detection is unavailable; rolling windows
    # need batch size 1 there (8 windows of 8192 tokens materialise ~26 GB of fp32 logits and are OOM-killed).
    parser.add_argument("--lm-eval-ppl-batch-size", default="auto" if torch.cuda.is_available() else "1")
    parser.add_argument("--gen-batch-size", default="32", help="both sides' generation batch size (slots)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side of each generation job (fastest counts)")
    args = parser.parse_args(argv)
    jobs = args.jobs.split(",")

    source = resolve_model(args.model)
    load_model_and_tokenizer(source, dtype=torch.float32, device="cpu")  # builds the dense copy lm-eval loads
    pretrained = str(dense_copy_dir(fingerprint(source))) if source.gguf_file else source.location
    gen_batch = args.gen_batch_size if args.gen_batch_size == "auto" else int(args.gen_batch_size)
    ours = HFBackend.load(
        args.model, device=args.device, dtype=args.dtype, kv_cache=args.kv_cache, batch_size=gen_batch
    )
    print(describe_machine(args))
    timed: list[TimedRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args)
        if "ppl" in jobs:
            ppl = HFBackend.load(args.model, device=args.device, dtype=args.dtype)
            peer = run_lm_eval(folder, pretrained, args, "bench_wikitext", args.lm_eval_ppl_batch_size)
            timed += report_perplexity(peer, run_llamabench(ppl, folder, "wikitext2"))
        for job in (SQUAD, WMT):
            if job.flag in jobs:
                # The sides alternate, and the faster run of each counts: this machine's speed drifts by 20%
                # over minutes, which one run per side would book as a difference between them.
                runs = [
                    (
                        run_lm_eval(folder, pretrained, args, job.name, args.gen_batch_size),
                        run_llamabench(ours, folder, job.name),
                    )
                    for _ in range(args.repeats)
                ]
                timed += report_generation(job, runs, ours)
    return timed


def describe_machine(args: argparse.Namespace) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none"
    return (
        f"machine: {cpu}, GPU {gpu}; torch {torch.__version__}, device {args.device}, threads "
        f"{torch.get_num_threads()}, dtype {args.dtype}; generation batch size {args.gen_batch_size} on both sides, "
        f"lm-eval rolling-perplexity batch size {args.lm_eval_ppl_batch_size}, llamabench's auto; "
        f"llamabench {args.kv_cache} key/value cache"
    )


def report_perplexity(peer: dict, ours: dict) -> list[TimedRun]:
    """Each side's counters and the speed-up in tokens scored per second; the tokens each side scored are counted
    with its own tokenizer over the texts it was given."""
    run = ours["run"]
    scored = int(run.samples["wikitext2"].n_tokens.sum())
    tokenizer = peer["model"]
    theirs_scored = sum(len(tokenizer.tok_encode(s["arguments"][0][0])) for s in peer["samples"])
    sides = (
        peer["meter"].record("wikitext2", "lm-eval HF", len(peer["samples"]), theirs_scored, "tokens scored"),
        ours["meter"].record("wikitext2", "llamabench", len(run.samples["wikitext2"]), scored, "tokens scored"),
    )
    print(f"\nwikitext2 rolling perplexity: {scored} tokens scored")
    for side in sides:
        print(f"  {side.line()} ({side.work / side.seconds:.0f} tok/s)")
    print("  " + compare("speed-up (tokens scored/s)", *sides).line())
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        theirs, mine = peer["results"][metric], run.value("wikitext2", metric)
        print(f"  {metric}: lm-eval {theirs:.6f}, llamabench {mine:.6f}, rel diff {abs(mine / theirs - 1):.2e}")
    return list(sides)


def report_generation(job: GenerationJob, runs: list[tuple[dict, dict]], backend: HFBackend) -> list[TimedRun]:
    """Every run's counters, the table of the fastest full run of each side, and the speed-up between them."""
    texts: dict[int, list[str]] = {}
    timed: list[tuple[TimedRun, dict]] = []
    for repeat, (peer, ours) in enumerate(runs, 1):
        texts[id(peer)] = [s["filtered_resps"][0] for s in peer["samples"]]
        texts[id(ours)] = list(ours["run"].samples[job.name].prediction)
        for side, result in (("lm-eval HF", peer), ("llamabench", ours)):
            kept = sum(len(backend.tokens.encode(text)) for text in texts[id(result)])
            record = result["meter"].record(job.name, side, len(texts[id(result)]), kept, "kept tokens")
            timed.append((record, result))
            print(f"{record.line()} (run {repeat})")
    best = {
        side: fastest(record for record, _ in timed if record.side == side) for side in ("lm-eval HF", "llamabench")
    }
    result = {side: next(r for record, r in timed if record is best[side]) for side in best}
    peer, ours = result["lm-eval HF"], result["llamabench"]
    mine, theirs = texts[id(ours)], texts[id(peer)]
    prompts = [s["arguments"][0][0] for s in peer["samples"]]
    print(f"\n{job.name}: {len(mine)} documents, greedy, at most {job.max_tokens} new tokens, until {job.until!r}")
    print(
        "| side | wall s | kept tokens | kept tok/s | forward passes | positions computed | row-steps computed "
        "| useful fraction |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for side, record in best.items():
        steps = result[side]["row_steps"]
        print(
            f"| {side} | {record.seconds:.1f} | {record.work} | {record.work / record.seconds:.1f} | "
            f"{record.forwards} | {record.positions} | {steps} | {record.work / max(steps, 1):.1%} |"
        )
    sides = best["lm-eval HF"], best["llamabench"]
    speed_up = compare("speed-up (kept tok/s)", *sides, work_tolerance=GENERATION_TOLERANCE)
    same = sum(a == b for a, b in zip(theirs, mine, strict=True))
    print(f"{speed_up.line()}; identical generations: {same}/{len(mine)}")
    print(
        f"llamabench draft tokens: {ours['drafted']} checked, {ours['accepted']} confirmed "
        "(row-steps count every position a pass computed: drafts and their padding too)"
    )
    for doc, (prompt, a, b) in enumerate(zip(prompts, mine, theirs, strict=True)):
        if a != b:
            step, gap = divergence_gap(backend, prompt, a, b)
            verdict = "near-tie" if gap < 1e-3 else "NOT a near-tie"
            print(f"  doc {doc} differs from token {step}: top-2 logit gap {gap:.2e} ({verdict})")
    return [record for record, _ in timed]


if __name__ == "__main__":
    main()
