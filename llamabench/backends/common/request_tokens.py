"""The token ids each request of the backend contract (``base.py``) stands for, shared by every engine that
tokenises for itself (transformers, vLLM, an HTTP server sent token ids): the context/continuation split, left
truncation, the rolling windows and the generation prompt, so two engines given the same tokenizer score exactly
the same tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llamabench.backends.common.score_items import ScoreItem, rolling_windows
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, Request, RollingRequest, require_prompt_room


@dataclass(frozen=True)
class GenerationJob:
    """One generation request as an engine runs it: prompt tokens, its own limits, and its sampling seed (None:
    greedy)."""

    prompt: list[int]
    max_new: int
    until: tuple[str, ...] = ()
    seed: int | None = None


class RequestTokens:
    """An encoder (text to token ids, no special tokens), the prefix token and the window (``max_length``),
    applied by the contract's rules. ``prefix_token`` may be None where only generation runs (a server that does
    not say its BOS); scoring needs it."""

    def __init__(self, encode: Callable[[str], list[int]], prefix_token: int | None, max_length: int):
        self.encode = encode
        self.prefix_token = prefix_token
        self.max_length = max_length

    @classmethod
    def of_tokenizer(cls, tokenizer, max_length: int) -> RequestTokens:
        """A transformers tokenizer's encoding, without special tokens, and its prefix token (BOS, else EOS)."""
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return cls(lambda text: tokenizer(text, add_special_tokens=False).input_ids, prefix, max_length)

    def loglikelihood_item(self, context: str, continuation: str) -> ScoreItem:
        # As lm-eval: trailing whitespace (any, as str.rstrip: newlines and tabs too, not only spaces) moves to
        # the continuation, whose log-likelihood then counts it, which changes acc_norm; the continuation's tokens
        # are those the joint encoding adds after the context's, so merges across the boundary are scored as the
        # model sees them.
        whole, n_continuation = self.context_continuation(context, continuation)
        tokens = whole[-(self.max_length + 1) :]  # lm-eval's left truncation: the last token is never fed
        return ScoreItem(tokens, min(n_continuation, len(tokens) - 1))

    def context_continuation(self, context: str, continuation: str) -> tuple[list[int], int]:
        """Context and continuation tokens before truncation (the prefix token for an empty context), and how
        many of them are the continuation's."""
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        if not continuation:
            raise LlamabenchError("a loglikelihood request has an empty continuation; every choice needs text")
        if stripped:
            context_tokens = self.encode(stripped)
            whole = self.encode(stripped + continuation)
            continuation_tokens = whole[len(context_tokens) :]
        else:
            context_tokens, continuation_tokens = [self.prefix_token], self.encode(continuation)
        return context_tokens + continuation_tokens, len(continuation_tokens)

    def rolling_items(self, request: RollingRequest) -> list[ScoreItem]:
        """The windows of a rolling request (see ``score_items.rolling_windows``)."""
        return rolling_windows(self.encode(request.text), self.prefix_token, self.max_length, request.stride)

    def generation_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's last ``max_length - max_new_tokens`` tokens."""
        require_prompt_room(request.max_new_tokens, self.max_length)
        return self.encode(request.prompt)[-(self.max_length - request.max_new_tokens) :]

    def truncated(self, request: Request) -> int:
        """How many of the request's tokens the window drops (see ``Backend.truncated_tokens``)."""
        if isinstance(request, RollingRequest):
            return 0  # windows cover every token
        if isinstance(request, GenerationRequest):
            require_prompt_room(request.max_new_tokens, self.max_length)
            return max(0, len(self.encode(request.prompt)) - (self.max_length - request.max_new_tokens))
        tokens, _ = self.context_continuation(request.context, request.continuation)
        return max(0, len(tokens) - (self.max_length + 1))


def tokenizer_chat_turn(tokenizer, text: str) -> str | None:
    """``text`` as one user turn in a transformers tokenizer's chat template, ready for generation; None when the
    tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
