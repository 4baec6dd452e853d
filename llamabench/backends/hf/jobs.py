"""What the transformers generation paths count (the work done), seeded sampling (one generator per row), and which
models window attention over cache columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class GenerationStats:
    """Work done: ``row_steps`` counts every row of every forward pass that produced next tokens."""

    # A prefill pass counts one per row (it gives each row one next token); a decoding pass counts every position
    # of every row, its draft tokens and their padding included.
    row_steps: int = 0
    forwards: int = 0
    drafted: int = 0  # draft tokens checked
    accepted: int = 0  # draft tokens the model confirmed
    reused_prompt_tokens: int = 0  # prompt tokens whose keys and values came from the prefix store


def seeded_draws(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> list[int]:
    """One token per row of ``logits``, drawn at temperature 1 from that row's own generator: a row's sample
    depends on its request's seed only, never on the batch it shares (both generation paths draw here)."""
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return [int(torch.multinomial(probs[row], 1, generator=generator)) for row, generator in enumerate(generators)]


def attends_by_column(model) -> bool:
    """Whether some attention layer keeps to a window of cache columns (Mistral, Gemma 2 and 3, Qwen with
    sliding windows) rather than of positions. An empty column among a row's own (a rejected draft, the gap
    after a reused prefix) would shrink that row's window, so for such a model rows keep their columns
    contiguous: no drafts, no prefix reuse."""
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list | tuple):
        return "sliding_attention" in layer_types
    return getattr(config, "sliding_window", None) is not None
