"""What the in-process engines (transformers, vLLM) share above :class:`TokenBackend`: the checkpoint's own
transformers tokenizer and generation config, the prefix token and end-of-sequence ids read from them, and the
identity (``BackendInfo``) built from them and the engine's own decisions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import tokenizers
import torch
import transformers

from llamabench import __version__
from llamabench.backends.base import BackendInfo
from llamabench.backends.common.generation_config import CheckpointGeneration
from llamabench.backends.common.model_facts import tokenizer_hash
from llamabench.backends.common.request_tokens import RequestTokens, tokenizer_chat_turn
from llamabench.backends.common.stops import eos_token_ids
from llamabench.backends.common.token_backend import TokenBackend


class TokenizerBackend(TokenBackend, ABC):
    """An engine in this process that reads the checkpoint's own transformers tokenizer and generation config:
    the prefix token, the end-of-sequence ids, the generation settings and the identity they give."""

    def __init__(
        self,
        tokenizer,
        generation_config,
        *,
        model_id: str,
        model_fingerprint: str,
        max_length: int,
        trust_remote_code: bool,
        progress: bool,
    ):
        self.tokenizer = tokenizer
        self.tokenizer_hash = tokenizer_hash(tokenizer)
        self.model_id = model_id
        self.fingerprint = model_fingerprint
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.progress = progress
        self.tokens = RequestTokens.of_tokenizer(tokenizer, max_length)
        self.prefix_token = self.tokens.prefix_token
        self.eos_tokens = eos_token_ids(generation_config, tokenizer)
        self.generation_settings = CheckpointGeneration(generation_config, model_id)

    def chat_turn(self, text: str) -> str | None:
        return tokenizer_chat_turn(self.tokenizer, text)

    def require_generation(self, task: str | None = None) -> None:
        self.generation_settings.require(task)

    def info(self) -> BackendInfo:
        decided = self.decided()
        return BackendInfo(
            model=self.model_id,
            fingerprint=self.fingerprint,
            max_length=self.max_length,
            dtype=decided.dtype,
            kv_cache=decided.kv_cache,
            trust_remote_code=self.trust_remote_code,
            generation_settings=self.generation_settings.record(),
            tokenizer=self.tokenizer_hash,
            device=decided.device,
            engine_name=self.engine_name,
            # The rest of what can change a stored number: the engine and how it runs the weights, the token every
            # text is scored after, and the code that computes (an upgrade of torch, transformers, tokenizers or
            # llamabench recomputes rather than trusting results from other kernels, tokenisation or windowing).
            engine=(
                *decided.engine,
                f"prefix={self.prefix_token}",
                *decided.placement,
                f"eos={self.eos_tokens}",
                f"torch={torch.__version__}",
                f"transformers={transformers.__version__}",
                f"tokenizers={tokenizers.__version__}",
                f"llamabench={__version__}",
            ),
        )

    @abstractmethod
    def decided(self) -> EngineDecided:
        """What this engine decided that changes a number, for :meth:`info`."""


@dataclass(frozen=True)
class EngineDecided:
    """An in-process engine's own part of its :class:`BackendInfo`: ``engine`` (its name, version and options,
    first in the identity) and ``placement`` (how it runs the weights: device type, kernels)."""

    dtype: str
    kv_cache: str
    device: str
    placement: tuple[str, ...]
    engine: tuple[str, ...] = ()
