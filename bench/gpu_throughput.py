"""GPU throughput of llamabench's HF backend: rolling perplexity (tokens/s, MFU) and batched greedy generation
(tokens/s, with transformers' dynamic key/value cache and with the static one that it compiles on CUDA), each
beside lm-eval's HF backend running the same model object, texts and batch size.

    python bench/gpu_throughput.py --data-dir ../shared/data [--model-shapes smollm2,1b,7b] [--batch-size 16]
    python bench/gpu_throughput.py --smoke   # tiny shapes and work, seconds on a CPU: checks the script itself

Models: ``smollm2`` is the embedded SmolLM2-135M, scored on WikiText-2 and prompted with SQuAD questions; ``1b``
(Llama-3.2-1B's shape) and ``7b`` (Llama-2-7B's) are randomly initialised on the device, with a tokenizer of one
word per token id (``t123``) so that their random token texts round-trip exactly. MFU is
2 · (weights of every linear layer, output head included) · tokens / seconds / the measured dense matmul peak
in the same dtype (bfloat16 on a GPU, float32 on a CPU). Timings only: nothing here judges model quality.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch
import transformers
from common import (
    GENERATION_TOLERANCE,
    LLAMABENCH_METHODS,
    LM_EVAL_METHODS,
    Meter,
    TimedRun,
    compare,
    default_data_dir,
    instances,
)

from llamabench.backends.hf.backend import HFBackend
from llamabench.config import KV_CACHES
from llamabench.requests import GenerationRequest, RollingRequest
from llamabench.tasks.data import read_jsonl, read_wikitext_documents

T = TypeVar("T")
CONTEXT = 4096  # the random models' max_position_embeddings (Llama-2's window)
SHAPES = {
    "1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
    },
    "7b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
    },
}
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: LlamaConfig's default bos and eos ids


@dataclass(frozen=True)
class Sizes:
    """How much work each job does."""

    matmul: int  # n of the n×n by n×n peak matmul
    matmul_reps: int
    ppl_tokens: int
    gen_prompts: int
    max_new_tokens: int
    batch_size: int
    prompt_tokens: tuple[int, int]  # length range of the random models' prompts
    shrink: bool  # random models at a few layers and a narrow width (vocabulary kept)


FULL = Sizes(8192, 50, 131072, 64, 128, 16, (64, 512), shrink=False)
SMOKE = Sizes(256, 5, 512, 4, 8, 4, (8, 32), shrink=True)


@dataclass(frozen=True)
class Row:
    """One timed job on one model: its run and counters; ``flops_per_token`` gives its MFU, ``peer`` (lm-eval's run
    of the same work) its ratio."""

    job: str
    model: str
    run: TimedRun
    flops_per_token: float | None = None
    peer: TimedRun | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.run.work / self.run.seconds


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``work()`` and its wall time, with the device's queued kernels finished at both ends."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured dense matmul FLOP/s: ``reps`` n×n products after a warm-up."""
    a, b, out = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
    for _ in range(3):
        torch.matmul(a, b, out=out)
    _, seconds = timed(lambda: [torch.matmul(a, b, out=out) for _ in range(reps)], device)
    return 2 * n**3 * reps / seconds


def matmul_params(model: torch.nn.Module) -> int:
    """Weights that multiply every token's activations: each linear layer's, the output head included."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def id_tokenizer(vocab_size: int):
    """One whitespace-separated word per token id (``t3`` ... ), with <unk>, <s> and </s> (also padding) first."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIAL_TOKENS, *(f"t{i}" for i in range(len(SPECIAL_TOKENS), vocab_size))]
    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def shape_config(name: str, shrink: bool):
    """The LlamaConfig of a preset; ``shrink`` keeps its vocabulary and query/key-value head ratio only."""
    from transformers import LlamaConfig

    shape = dict(SHAPES[name])
    if shrink:
        ratio = shape["num_attention_heads"] // shape["num_key_value_heads"]
        shape |= {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
        shape["num_key_value_heads"] = 4 // ratio
    return LlamaConfig(**shape, max_position_embeddings=CONTEXT)


def random_backend(name: str, sizes: Sizes, device: torch.device, dtype: torch.dtype) -> HFBackend:
    """A randomly initialised preset, its weights built directly on ``device``."""
    from transformers import AutoModelForCausalLM

    config = shape_config(name, sizes.shrink)
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    tokenizer = id_tokenizer(config.vocab_size)
    return HFBackend(model, tokenizer, model_id=f"random-{name}", batch_size=sizes.batch_size, progress=False)


def documents(tokenizer, ids: list[int], doc_tokens: int) -> list[str]:
    """``ids`` cut into texts of at most ``doc_tokens`` tokens (one rolling window each)."""
    return [tokenizer.decode(ids[start : start + doc_tokens]) for start in range(0, len(ids), doc_tokens)]


def wikitext_ids(tokenizer, data_dir: Path, n: int) -> list[int]:
    """The first ``n`` tokens of the WikiText-2 raw test articles."""
    ids: list[int] = []
    for page in read_wikitext_documents(data_dir / "wikitext2_raw_test" / "wiki.test.raw"):
        ids += tokenizer(page["page"], add_special_tokens=False).input_ids
        if len(ids) >= n:
            break
    return ids[:n]


def squad_prompts(data_dir: Path, n: int) -> list[str]:
    questions = read_jsonl(data_dir / "squad_v1.1_dev" / "dev.jsonl")[:n]
    return [f"{q['context']}\n\nQ: {q['question']}\nA:" for q in questions]


def random_texts(backend: HFBackend, sizes: Sizes) -> tuple[list[str], list[str]]:
    """Perplexity documents and generation prompts of uniformly random (non-special) token ids."""
    generator = torch.Generator().manual_seed(0)
    vocab, low = backend.model.config.vocab_size, len(SPECIAL_TOKENS)
    ids = torch.randint(low, vocab, (sizes.ppl_tokens,), generator=generator).tolist()
    shortest, longest = sizes.prompt_tokens
    lengths = torch.randint(shortest, longest + 1, (sizes.gen_prompts,), generator=generator)
    prompts = [torch.randint(low, vocab, (int(n),), generator=generator).tolist() for n in lengths]
    return documents(backend.tokenizer, ids, backend.max_length), [backend.tokenizer.decode(p) for p in prompts]


def lm_eval_peer(backend: HFBackend, batch_size: int):
    """lm-eval's HF backend over the same model object and tokenizer."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=batch_size, max_length=backend.max_length
    )


def warm_then_time(
    backend: HFBackend, answerer, method: str, requests: list, device: torch.device, **options
) -> tuple[list, Meter]:
    """``answerer.method`` (llamabench's backend or lm-eval's model, both over ``backend``'s model) on one request
    untimed (kernel selection, allocator growth: nothing it returns is kept), then on all of them, timed by a
    :class:`Meter` counting the model's passes and the requests reaching ``answerer``'s request methods."""
    getattr(answerer, method)(requests[-1:], **options)
    methods = LLAMABENCH_METHODS if answerer is backend else LM_EVAL_METHODS
    with Meter(model=backend.model, answerer=answerer, methods=methods, synchronize=lambda: synchronize(device)) as m:
        result = getattr(answerer, method)(requests, **options)  # looked up now: the meter's counting version
    return result, m


def perplexity_rows(name: str, backend: HFBackend, texts: list[str], peer, device: torch.device) -> list[Row]:
    """Rolling log-likelihood of ``texts`` through llamabench, and through lm-eval when ``peer`` is given; each
    side's tokens scored counted from its own results or its own tokenizer."""
    flops = 2.0 * matmul_params(backend.model)
    job = f"rolling ppl {name}"
    requests = [RollingRequest(t) for t in texts]
    results, meter = warm_then_time(backend, backend, "loglikelihood_rolling", requests, device)
    run = meter.record(job, "llamabench", len(texts), sum(n for _, n in results), "tokens scored")
    if peer is None:
        return [Row("rolling ppl", name, run, flops)]
    peer_requests = instances("loglikelihood_rolling", [(t,) for t in texts])
    _, meter = warm_then_time(backend, peer, "loglikelihood_rolling", peer_requests, device, disable_tqdm=True)
    scored = sum(len(peer.tok_encode(t)) for t in texts)
    peer_timed = meter.record(job, "lm-eval", len(texts), scored, "tokens scored")
    return [Row("rolling ppl", name, run, flops, peer_timed), Row("rolling ppl, lm-eval", name, peer_timed, flops)]


def generation_rows(
    name: str, backend: HFBackend, prompts: list[str], max_new: int, peer, device: torch.device
) -> tuple[list[Row], int | None]:
    """Greedy generation (stopping at EOS only) through llamabench, with each key/value cache, and lm-eval:
    the rows, and the fewest generations equal to lm-eval's over the caches (``None`` without lm-eval). Each run's
    tokens are its own texts' tokens."""

    def kept(texts: list[str]) -> int:
        return sum(len(backend.tokenizer(text, add_special_tokens=False).input_ids) for text in texts)

    job = f"greedy generation {name}"
    runs = {}
    for kv_cache in KV_CACHES:
        backend.kv_cache = kv_cache
        requests = [GenerationRequest(p, max_new) for p in prompts]
        texts, meter = warm_then_time(backend, backend, "generate", requests, device)
        runs[kv_cache] = (
            texts,
            meter.record(job, f"llamabench {kv_cache} cache", len(prompts), kept(texts), "kept tokens"),
        )
    if peer is None:
        return [Row(f"greedy generation, {kv} cache", name, run) for kv, (_, run) in runs.items()], None
    settings = [(p, {"until": [], "max_gen_toks": max_new, "do_sample": False}) for p in prompts]
    peer_requests = instances("generate_until", settings)
    theirs, meter = warm_then_time(backend, peer, "generate_until", peer_requests, device, disable_tqdm=True)
    peer_timed = meter.record(job, "lm-eval", len(prompts), kept(theirs), "kept tokens")
    rows = [Row(f"greedy generation, {kv} cache", name, run, peer=peer_timed) for kv, (_, run) in runs.items()]
    rows.append(Row("greedy generation, lm-eval", name, peer_timed))
    equal = [sum(a == b for a, b in zip(ours, theirs, strict=True)) for ours, _ in runs.values()]
    return rows, min(equal)


def model_subject(
    name: str, sizes: Sizes, data_dir: Path, device: torch.device, dtype: torch.dtype
) -> tuple[HFBackend, list[str], list[str]]:
    """The backend, perplexity texts and generation prompts for one ``--model-shapes`` entry."""
    if name != "smollm2":
        backend = random_backend(name, sizes, device, dtype)
        return (backend, *random_texts(backend, sizes))
    backend = HFBackend.load(None, device=device.type, dtype=dtype_name(dtype), batch_size=sizes.batch_size)
    backend.progress = False
    ids = wikitext_ids(backend.tokenizer, data_dir, sizes.ppl_tokens)
    return backend, documents(backend.tokenizer, ids, backend.max_length), squad_prompts(data_dir, sizes.gen_prompts)


def run_model(
    name: str, sizes: Sizes, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> tuple[list[Row], int | None]:
    """Every job on one model; lm-eval's perplexity on smollm2 only."""
    backend, texts, prompts = model_subject(name, sizes, args.data_dir, device, dtype)
    label = f"{name}-tiny" if sizes.shrink and name in SHAPES else name
    print(
        f"{label}: {matmul_params(backend.model) / 1e9:.3f}B linear-layer weights, context {backend.max_length}, "
        f"attention {backend.model.config._attn_implementation}"
    )
    peer = lm_eval_peer(backend, sizes.batch_size) if args.lm_eval else None
    rows = perplexity_rows(label, backend, texts, peer if name == "smollm2" else None, device)
    generation, equal = generation_rows(label, backend, prompts, sizes.max_new_tokens, peer, device)
    return rows + generation, equal


def format_table(rows: list[Row], dtype: torch.dtype, peak: float) -> str:
    """The table, then every run's counters and every ratio left out with the reason (bench/common.py's rule)."""
    lines = [
        "| job | model | dtype | tokens | seconds | tokens/s | MFU | ratio vs lm-eval |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        mfu = "–" if row.flops_per_token is None else f"{100 * row.flops_per_token * row.tokens_per_s / peak:.1f}%"
        ratio = "–"
        if row.peer is not None:
            tolerance = GENERATION_TOLERANCE if row.job.startswith("greedy") else 0.0
            versus = compare(f"{row.job} {row.model} vs lm-eval", row.peer, row.run, work_tolerance=tolerance)
            ratio = f"{versus.ratio:.2f}x" if versus.ratio is not None else "none (below)"
            notes += [] if versus.ratio is not None else [versus.line()]
        lines.append(
            f"| {row.job} | {row.model} | {dtype_name(dtype)} | {row.run.work} | {row.run.seconds:.2f} | "
            f"{row.tokens_per_s:,.0f} | {mfu} | {ratio} |"
        )
    return "\n".join([*lines, "", *(row.run.line() for row in rows), *notes])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-shapes", default="smollm2,1b,7b", help="comma-separated: smollm2, 1b, 7b")
    parser.add_argument("--ppl-tokens", type=int, help=f"tokens of rolling perplexity (default {FULL.ppl_tokens})")
    parser.add_argument("--gen-prompts", type=int, help=f"generation prompts (default {FULL.gen_prompts})")
    parser.add_argument("--max-new-tokens", type=int, help=f"greedy new tokens (default {FULL.max_new_tokens})")
    parser.add_argument("--batch-size", type=int, help=f"sequences per batch, both backends ({FULL.batch_size})")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and work: checks the script, on a CPU too")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="WikiText-2 and SQuAD (smollm2)")
    args = parser.parse_args(argv)
    args.model_shapes = [s.strip() for s in args.model_shapes.split(",") if s.strip()]
    unknown = set(args.model_shapes) - {"smollm2", *SHAPES}
    if unknown:
        parser.error(f"unknown model shape(s) {', '.join(sorted(unknown))}; pick from smollm2, {', '.join(SHAPES)}")
    if "smollm2" in args.model_shapes and not (args.data_dir / "squad_v1.1_dev" / "dev.jsonl").is_file():
        parser.error(f"no SQuAD data under --data-dir {args.data_dir}; smollm2 needs the shared data")
    args.lm_eval = importlib.util.find_spec("lm_eval") is not None
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    flags = ("ppl_tokens", "gen_prompts", "max_new_tokens", "batch_size")
    return replace(SMOKE if args.smoke else FULL, **{f: getattr(args, f) for f in flags if getattr(args, f)})


def main(argv: list[str] | None = None) -> int:
    """Every job on every model; 1 when generations differ from lm-eval's."""
    rows, failed = benchmark(argv)
    return int(failed)


def benchmark(argv: list[str] | None = None) -> tuple[list[Row], bool]:
    """Print the figures; returns the rows and whether generations differ from lm-eval's."""
    args = parse_args(argv)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its warnings about being handed a model object
    sizes = sizes_from(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    peer_version = importlib.metadata.version("lm_eval") if args.lm_eval else "not installed"
    print(
        f"device: {name} ({device.type}, {torch.get_num_threads()} CPU threads), torch {torch.__version__}, "
        f"transformers {transformers.__version__}, lm-eval {peer_version}"
    )
    if not args.lm_eval:
        print("lm-eval is not installed (pip install 'llamabench[lm-eval]'): its columns are left empty")
    peak = matmul_peak(device, dtype, sizes.matmul, sizes.matmul_reps)
    print(
        f"measured dense {dtype_name(dtype)} matmul peak ({sizes.matmul}³, {sizes.matmul_reps} reps): "
        f"{peak / 1e12:.2f} TFLOP/s"
    )
    rows, equal = [], {}
    for shape in args.model_shapes:
        shape_rows, equal[shape] = run_model(shape, sizes, args, device, dtype)
        rows += shape_rows
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(
        f"\nwork per model: {sizes.ppl_tokens} tokens of rolling perplexity in windows of the model's context "
        f"(random models: {CONTEXT}); {sizes.gen_prompts} prompts × at most {sizes.max_new_tokens} greedy new "
        f"tokens, stopping at EOS only; batch size {sizes.batch_size} for both backends. lm-eval's perplexity runs "
        "on smollm2 only (it keeps batch × context × vocabulary log-probabilities, too many for 128k vocabularies). "
        "Ratio: llamabench's tokens/s over lm-eval's, printed only where both computed the same work in full "
        "(their counters follow the table)."
    )
    print(f"\n{format_table(rows, dtype, peak)}\n")
    compared = {shape: count for shape, count in equal.items() if count is not None}
    for shape, count in compared.items():
        print(f"{shape}: {count}/{sizes.gen_prompts} generations equal to lm-eval's")
    differ = [shape for shape, count in compared.items() if count != sizes.gen_prompts]
    if differ:
        print(f"FAIL: generations differ from lm-eval's on {', '.join(differ)}", file=sys.stderr)
    return rows, bool(differ)


if __name__ == "__main__":
    sys.exit(main())
