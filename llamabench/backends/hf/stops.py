"""Where a generation ends: the model's end-of-sequence tokens, and stop sequences found as tokens arrive."""

from __future__ import annotations


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a generation: the model's generation config may list several (Llama-3-Instruct's
    ``<|eot_id|>`` beside ``<|end_of_text|>``), the tokenizer names one."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list | tuple) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return sorted({int(token) for token in ids if token is not None})


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop sequence."""
    cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
    return text[:cut]


class StopCheck:
    """Whether a row's generated text contains a stop sequence, decoding only the last few tokens per step.

    A stop completed by the newest token lies within its last ``len(stop.encode())`` tokens (every token adds at
    least one byte); two more cover a first token whose leading space or partial character decodes differently
    alone. A hit in that window is confirmed on the whole text, so the answer equals a whole-text check whenever
    it says stop; a stop the window misses (special tokens among the tail) only costs extra steps, since the
    returned text is cut at the first stop anyway.
    """

    def __init__(self, tokenizer, until: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.until = tuple(stop for stop in until if stop)
        self.window = max((len(stop.encode()) for stop in self.until), default=0) + 2

    def hit(self, tokens: list[int]) -> bool:
        if not self.until:
            return False
        tail = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
        if not any(stop in tail for stop in self.until):
            return False
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return any(stop in text for stop in self.until)
