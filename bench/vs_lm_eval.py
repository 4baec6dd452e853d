"""Head-to-head with lm-eval's HF backend: same model, data, prompts and limits, one process.

For WikiText-2 rolling perplexity and a greedy QA generation task, runs lm-eval 0.4.13 (its own
task machinery and HF backend, on local copies of the documents) and llamabench back to back,
checks the numbers agree, and prints wall time, tokens/s and the speed ratio.

    python bench/vs_lm_eval.py --data-dir ../shared/data [--ppl-docs 62] [--qa-docs 64]

With ``--ppl-docs 62`` the lm-eval figures are the ones ``tests/test_real_model.py`` pins.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from llamabench.backends.gguf import dense_copy_dir
from llamabench.backends.hf import HFBackend
from llamabench.backends.loading import KV_CACHES, load_model_and_tokenizer
from llamabench.backends.model_source import fingerprint, resolve_model
from llamabench.runner import RunConfig, evaluate, prepare_tasks
from llamabench.tasks.data import read_jsonl, read_wikitext_documents

QA_PROMPT = "{{ context }}\n\nQ: {{ question }}\nA (a short span copied from the text above):"
QA_MAX_TOKENS = 32
LOCAL_JSON = """\
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
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
LM_EVAL_QA = """\
task: bench_qa
output_type: generate_until
doc_to_text: {prompt}
doc_to_target: "{{{{ answers[0] }}}}"
generation_kwargs: {{until: ["\\n", "Q:"], max_gen_toks: {max_tokens}, do_sample: false}}
metric_list: [{{metric: exact_match}}]
"""
HOOKS = "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"
LLAMABENCH_QA = """\
name: bench_qa
kind: generate
dataset: {{local: qa.jsonl}}
doc_id: "{{{{ id }}}}"
prompt: {prompt}
target: "{{{{ answers }}}}"
generation: {{max_new_tokens: {max_tokens}, until: ["\\n", "Q:"]}}
metrics: [exact_match]
"""


def write_inputs(folder: Path, data_dir: Path, ppl_docs: int, qa_docs: int) -> None:
    pages = read_wikitext_documents(data_dir / "wikitext2_raw_test" / "wiki.test.raw")[:ppl_docs]
    questions = read_jsonl(data_dir / "squad_v1.1_dev" / "dev.jsonl")[:qa_docs]
    (folder / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    (folder / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "wikitext2_raw_test").mkdir()
    (folder / "wikitext2_raw_test" / "wiki.test.raw").write_text("\n".join(p["page"] for p in pages))
    prompt = json.dumps(QA_PROMPT)
    (folder / "bench_wikitext.yaml").write_text((LM_EVAL_PPL + LOCAL_JSON).format(data=folder / "pages.jsonl"))
    (folder / "bench_qa.yaml").write_text(
        (LM_EVAL_QA + LOCAL_JSON).format(data=folder / "qa.jsonl", prompt=prompt, max_tokens=QA_MAX_TOKENS)
    )
    (folder / "hooks.py").write_text(HOOKS)
    (folder / "llamabench_tasks").mkdir()
    (folder / "llamabench_tasks" / "bench_qa.yaml").write_text(
        LLAMABENCH_QA.format(prompt=prompt, max_tokens=QA_MAX_TOKENS)
    )


def run_lm_eval(folder: Path, pretrained: str, device: str, dtype: str, batch_sizes: dict[str, str]) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    timings, results, samples = {}, {}, {}
    for task, batch_size in batch_sizes.items():
        model = HFLM(pretrained=pretrained, device=device, dtype=dtype, batch_size=batch_size)
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=model,
            tasks=[task],
            task_manager=TaskManager(include_path=str(folder)),
            log_samples=True,
            bootstrap_iters=0,
        )
        timings[task] = time.perf_counter() - start
        results[task] = {k.split(",")[0]: v for k, v in out["results"][task].items() if "," in k and "stderr" not in k}
        samples[task] = out["samples"][task]
    return {"seconds": timings, "results": results, "samples": samples}


def run_llamabench(
    folder: Path, model: str | None, device: str, dtype: str, kv_cache: str
) -> tuple[dict, dict, HFBackend]:
    backend = HFBackend.load(model, device=device, dtype=dtype, kv_cache=kv_cache)
    timings, runs = {}, {}
    for task in ("wikitext2", "bench_qa"):
        config = RunConfig(
            tasks=[task], data_dir=folder, tasks_dirs=[folder / "llamabench_tasks"], num_fewshot=0, bootstrap_iters=0
        )
        start = time.perf_counter()  # like lm-eval's timing, this includes loading and rendering the documents
        runs[task] = evaluate(backend, prepare_tasks(config), config)
        timings[task] = time.perf_counter() - start
    return timings, runs, backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--ppl-docs", type=int, default=8)
    parser.add_argument("--qa-docs", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache", choices=KV_CACHES, default="dynamic", help="llamabench's generation cache")
    gpu = torch.cuda.is_available()
    # lm-eval at its best setting: 'auto' on GPU. On CPU its auto-detection is unavailable; rolling windows
    # need batch size 1 there (8 windows of 8192 tokens materialise ~26 GB of fp32 logits and are OOM-killed).
    parser.add_argument("--lm-eval-ppl-batch-size", default="auto" if gpu else "1")
    parser.add_argument("--lm-eval-gen-batch-size", default="auto" if gpu else "16")
    args = parser.parse_args()

    source = resolve_model(args.model)
    load_model_and_tokenizer(source, dtype=torch.float32, device="cpu")  # builds the dense copy lm-eval loads
    pretrained = str(dense_copy_dir(fingerprint(source))) if source.gguf_file else source.location
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args.data_dir, args.ppl_docs, args.qa_docs)
        batch_sizes = {"bench_wikitext": args.lm_eval_ppl_batch_size, "bench_qa": args.lm_eval_gen_batch_size}
        peer = run_lm_eval(folder, pretrained, args.device, args.dtype, batch_sizes)
        ours_seconds, ours, backend = run_llamabench(folder, args.model, args.device, args.dtype, args.kv_cache)
    report(args, peer, ours_seconds, ours, backend)


def report(args: argparse.Namespace, peer: dict, ours_seconds: dict, ours: dict, backend: HFBackend) -> None:
    ppl_samples = ours["wikitext2"].samples["wikitext2"]
    qa_samples = ours["bench_qa"].samples["bench_qa"]
    peer_answers = [s["filtered_resps"][0] for s in sorted(peer["samples"]["bench_qa"], key=lambda s: s["doc_id"])]
    agree = sum(a == b for a, b in zip(peer_answers, qa_samples.prediction, strict=True))
    scored = int(ppl_samples.n_tokens.sum())
    generated = sum(len(backend.tokenizer(p, add_special_tokens=False).input_ids) for p in qa_samples.prediction)
    rows = [
        (
            "wikitext2 rolling ppl",
            "tokens scored",
            scored,
            peer["seconds"]["bench_wikitext"],
            ours_seconds["wikitext2"],
        ),
        (
            "squad greedy generation",
            "tokens generated",
            generated,
            peer["seconds"]["bench_qa"],
            ours_seconds["bench_qa"],
        ),
    ]
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"device {args.device}, threads {torch.get_num_threads()}, dtype {args.dtype}, "
        f"lm-eval batch size {args.lm_eval_ppl_batch_size} (ppl) / {args.lm_eval_gen_batch_size} (generation), "
        f"llamabench batch size auto, {args.kv_cache} key/value cache"
    )
    print(
        f"documents: {args.ppl_docs} WikiText-2 articles, {args.qa_docs} SQuAD questions "
        f"(0-shot, {QA_MAX_TOKENS} new tokens max)\n"
    )
    print("| job | work | lm-eval s | llamabench s | lm-eval tok/s | llamabench tok/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for job, unit, tokens, theirs, mine in rows:
        print(
            f"| {job} | {tokens} {unit} | {theirs:.1f} | {mine:.1f} | {tokens / theirs:.0f} | "
            f"{tokens / mine:.0f} | {theirs / mine:.2f}x |"
        )
    print("\nagreement:")
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        theirs, mine = peer["results"]["bench_wikitext"][metric], ours["wikitext2"].value("wikitext2", metric)
        print(f"  {metric}: lm-eval {theirs:.6f}, llamabench {mine:.6f}, rel diff {abs(mine / theirs - 1):.2e}")
    print(
        f"  generations identical: {agree}/{len(peer_answers)}; exact match: lm-eval (strict, first answer) "
        f"{100 * peer['results']['bench_qa']['exact_match']:.2f}, llamabench (SQuAD-normalised, best answer) "
        f"{ours['bench_qa'].value('bench_qa', 'exact_match'):.2f}"
    )


if __name__ == "__main__":
    main()
