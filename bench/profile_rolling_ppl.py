"""Where rolling-perplexity time goes: one WikiText-2 window scored by llamabench and by lm-eval's HF backend,
each under torch.profiler, with the operator groups' shares of CPU (or CUDA) time.

    python bench/profile_rolling_ppl.py --data-dir ../shared/data [--tokens 4096] [--device cpu]

Both run the same model object on the same text; the table shows how much of each side's time is the dense
forward (matrix products and attention), which the two share, and how much is the scoring around it.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import torch
from common import LLAMABENCH_METHODS, LM_EVAL_METHODS, Meter, TimedRun, default_data_dir, instances
from torch.profiler import ProfilerActivity, profile

from llamabench.backends.hf.backend import HFBackend
from llamabench.requests import RollingRequest
from llamabench.tasks.data import read_wikitext_documents

GROUPS = {  # profiler operator name -> the group it is reported under
    "aten::mm": "matrix products (linear layers, vocabulary head)",
    "aten::addmm": "matrix products (linear layers, vocabulary head)",
    "aten::bmm": "matrix products (linear layers, vocabulary head)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (SDPA)",
    "aten::_scaled_dot_product_flash_attention": "attention (SDPA)",
    "aten::_scaled_dot_product_efficient_attention": "attention (SDPA)",
    "aten::_scaled_dot_product_cudnn_attention": "attention (SDPA)",
    "aten::_log_softmax": "log-softmax over the vocabulary",
    "aten::argmax": "greedy check (argmax over the vocabulary)",
}


def profiled(work, device: torch.device, meter: Meter) -> tuple[Counter, object]:
    """Self time (seconds) per operator group of ``work()``, run under ``meter`` (its wall time and counters), and
    what ``work()`` returned."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, meter:
        result = work()
    groups: Counter = Counter()
    for event in prof.key_averages():
        own = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        groups[GROUPS.get(event.key, "everything else")] += own / 1e6
    return groups, result


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Profile both sides and print the table and each side's counters; returns both sides' runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--tokens", type=int, default=4096, help="length of the one scored window")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval.models.huggingface import HFLM

    ours = HFBackend.load(args.model, device=args.device, dtype="float32", batch_size=1)
    ours.progress = False
    page = read_wikitext_documents(args.data_dir / "wikitext2_raw_test" / "wiki.test.raw")[0]["page"]
    text = ours.tokenizer.decode(ours.tokenizer(page * 4, add_special_tokens=False).input_ids[: args.tokens])
    peer = HFLM(pretrained=ours.model, tokenizer=ours.tokenizer, batch_size=1, device=str(ours.device))
    jobs = {  # each looks its method up when it runs: the meter's counting version
        "llamabench": lambda: ours.loglikelihood_rolling([RollingRequest(text)]),
        "lm-eval": lambda: peer.loglikelihood_rolling(instances("loglikelihood_rolling", [(text,)]), disable_tqdm=True),
    }
    for work in jobs.values():
        work()  # warm-up: allocator growth, kernel choice (nothing it returns is kept)
    sync = (lambda: torch.cuda.synchronize(ours.device)) if ours.device.type == "cuda" else (lambda: None)
    meters = {
        "llamabench": Meter(model=ours.model, answerer=ours, methods=LLAMABENCH_METHODS, synchronize=sync),
        "lm-eval": Meter(model=ours.model, answerer=peer, methods=LM_EVAL_METHODS, synchronize=sync),
    }
    profiles = {name: profiled(work, ours.device, meters[name]) for name, work in jobs.items()}
    measured = {name: groups for name, (groups, _) in profiles.items()}
    names = sorted({group for groups in measured.values() for group in groups}, key=lambda g: g == "everything else")
    print(
        f"one window of {args.tokens} tokens, {ours.model_id} fp32 on {ours.device}, {torch.get_num_threads()} threads"
    )
    print("| share of time | " + " | ".join(measured) + " |")
    print("|---|" + "---:|" * len(measured))
    for group in names:
        cells = [f"{100 * groups[group] / sum(groups.values()):.1f}%" for groups in measured.values()]
        print(f"| {group} | " + " | ".join(cells) + " |")
    walls = " | ".join(f"{meter.seconds:.2f}" for meter in meters.values())
    print(f"| wall seconds (under the profiler) | {walls} |")
    # tokens scored: llamabench's own count, and lm-eval's text through its own tokenizer
    scored = {"llamabench": profiles["llamabench"][1][0][1], "lm-eval": len(peer.tok_encode(text))}
    runs = [meter.record("rolling window", name, 1, scored[name], "tokens scored") for name, meter in meters.items()]
    for timed in runs:
        print(timed.line() + (f"; not the whole work: {timed.shortfall()}" if timed.shortfall() else ""))
    return runs


if __name__ == "__main__":
    main()
