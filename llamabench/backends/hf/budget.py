"""The token budget of ``--batch-size auto``, derived from the memory free for activations.

Scoring runs without a key/value cache under ``torch.inference_mode``, so what a batch adds to the resident
weights is its activations plus the fp32 logits of one chunk of scored positions. The formula (worked example in
``token_budget``) over-estimates on purpose; a batch that still runs out of memory is split by the back-off in
``BatchPolicy.run``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from llamabench.errors import LlamabenchError

# Share of the free memory a batch may use: the rest absorbs allocator fragmentation, the tokenizer's and
# Python's own growth, and whatever else shares the device.
USABLE_FRACTION = 0.65
# Widths live at once inside one layer, in units of the hidden size (queries, keys, values and attention output)
# and of the MLP's intermediate size (gate, up and their product). Inference mode frees a layer's intermediates
# before the next layer runs, so one layer's count.
ATTENTION_WIDTHS = 4
MLP_WIDTHS = 3
# On a CPU the forward pass is compute-bound: past a few thousand tokens a larger batch only adds padding and
# memory, never speed, so the budget stops here however much RAM is free.
CPU_TOKEN_CAP = 8192
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class BudgetInputs:
    """What the budget is computed from (recorded in the manifest)."""

    free_bytes: int  # free device memory (GPU) or available RAM (CPU), measured after the weights were loaded
    param_bytes: int  # weights that free_bytes still counts as free (on a CPU: memory-mapped pages; on a GPU: 0)
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int  # bytes per activation element
    logit_rows: int  # positions projected to the vocabulary at once
    cap: int | None  # CPU_TOKEN_CAP on a CPU, none on a GPU


def token_budget(inputs: BudgetInputs) -> int:
    """Padded tokens per batch: (USABLE_FRACTION × free − weights − logits) / bytes per token, at least 1.

    bytes per token = dtype_bytes × (layers × hidden + ATTENTION_WIDTHS × hidden + MLP_WIDTHS × intermediate):
    one layer's intermediates, plus an allowance of one hidden state per layer for the fragmentation the caching
    allocator builds up across layers. logits = 2 × logit_rows × vocab × 4 (fp32 logits and their log-softmax).
    ``param_bytes`` is what free memory still counts although the weights hold it: on a CPU the weights'
    memory-mapped checkpoint pages count as available RAM, so they are subtracted; on a GPU the allocator's free
    memory is measured after loading and already excludes them (0).

    Worked example, a 7B LLaMA in bf16 on an 80 GB GPU with 66 GB free once loaded: 32 layers, hidden 4096,
    intermediate 11008, vocabulary 32000. bytes per token = 2 × (32 × 4096 + 4 × 4096 + 3 × 11008) = 360,960;
    logits = 2 × 2048 × 32000 × 4 = 524,288,000; (0.65 × 66e9 − 0 − 524,288,000) / 360,960 = 117,397 tokens.
    """
    per_token = inputs.dtype_bytes * (
        inputs.layers * inputs.hidden + ATTENTION_WIDTHS * inputs.hidden + MLP_WIDTHS * inputs.intermediate
    )
    logits = 2 * inputs.logit_rows * inputs.vocab * 4
    spare = math.floor(USABLE_FRACTION * inputs.free_bytes) - inputs.param_bytes - logits
    tokens = max(1, spare // per_token)
    return tokens if inputs.cap is None else min(tokens, inputs.cap)


def budget_inputs(model, device: torch.device, logit_rows: int) -> BudgetInputs:
    """Read the budget's inputs off a loaded transformers model and the device its inputs go to."""
    config = model.config
    on_gpu = device.type == "cuda"
    return BudgetInputs(
        free_bytes=torch.cuda.mem_get_info(device)[0] if on_gpu else available_ram(),
        param_bytes=0 if on_gpu else sum(p.numel() * p.element_size() for p in model.parameters()),
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
        vocab=config.vocab_size,
        dtype_bytes=model.dtype.itemsize,
        logit_rows=logit_rows,
        cap=None if on_gpu else CPU_TOKEN_CAP,
    )


def available_ram() -> int:
    """Bytes of RAM available without swapping: /proc/meminfo's MemAvailable, else psutil's (if installed)."""
    if MEMINFO.exists():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil
    except ImportError:
        raise LlamabenchError(
            "--batch-size auto cannot read the available memory (no /proc/meminfo, no psutil); pass --batch-size N"
        ) from None
    return int(psutil.virtual_memory().available)
