"""Where a generation ends, for every engine: the model's end-of-sequence tokens, and the cut at a stop string."""

from __future__ import annotations


def eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Every token that ends a generation: the model's generation config (None: it has none) may list several
    (Llama-3-Instruct's ``<|eot_id|>`` beside ``<|end_of_text|>``), the tokenizer names one."""
    configured = getattr(generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list | tuple) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return sorted({int(token) for token in ids if token is not None})


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop sequence."""
    cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
    return text[:cut]
