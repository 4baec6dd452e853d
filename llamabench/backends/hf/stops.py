"""Stop sequences found as tokens arrive, without decoding a whole row each step."""

from __future__ import annotations


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
