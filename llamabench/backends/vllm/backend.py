"""The vLLM engine (``--engine vllm``): the backend contract of ``base.py`` answered by vLLM's offline ``LLM``.

Tokenisation is llamabench's own (``request_tokens.py``, the transformers backend's rules and windows): vLLM is
given token ids, never text, so both engines score and continue exactly the same tokens. Scores come from vLLM's
prompt log-probabilities (``prompt_logprobs=1``: each prompt token's own log-probability, computed from the raw
logits, and its rank, 1 when it is the argmax); generation from its sampler, with the checkpoint's generation
config switched off (``generation_config="vllm"``) and every setting given per request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import takewhile
from types import SimpleNamespace

import tokenizers
import torch
import transformers
from tqdm.auto import tqdm

from llamabench import __version__
from llamabench.backends.base import Backend, BackendInfo, OnDone
from llamabench.backends.common.generation_config import CheckpointGeneration
from llamabench.backends.common.model_facts import (
    DTYPES,
    default_dtype,
    effective_max_length,
    require_text,
    tokenizer_hash,
    trained_positions,
)
from llamabench.backends.common.request_tokens import RequestTokens
from llamabench.backends.common.score_items import RollingTotals, ScoreItem
from llamabench.backends.common.stops import cut_at_stop, eos_token_ids
from llamabench.backends.finite import require_finite
from llamabench.backends.loading.load import checkpoint_location
from llamabench.backends.loading.model_source import fingerprint, pin, resolve_model
from llamabench.errors import LlamabenchError, first_line
from llamabench.escaping import terminal
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest

# Requests handed to vLLM at once: it schedules within them as it likes; on_done is called after each chunk, so
# a kill loses at most one chunk.
CHUNK = 256
# vLLM's share of memory when --gpu-memory-utilization is not given: its own default on a GPU; on a CPU the share
# of host memory it reserves for the KV cache, where its default (0.92) does not start beside anything else.
DEFAULT_MEMORY = {"cuda": 0.9, "cpu": 0.15}


class VLLMBackend(Backend):
    """A causal LM run by vLLM in this process; ``load`` builds it from ``--model`` as the HF backend would."""

    def __init__(
        self,
        llm,
        tokenizer,
        generation_config,
        *,
        model_id: str,
        model_fingerprint: str,
        max_length: int,
        dtype: str,
        settings: dict,
        trust_remote_code: bool = False,
        progress: bool = True,
    ):
        import vllm

        self.llm = llm
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.tokenizer_hash = tokenizer_hash(tokenizer)
        self.model_id = model_id
        self.fingerprint = model_fingerprint
        self.max_length = max_length
        self.dtype = dtype
        self.settings = settings  # the engine settings that change numbers, for the cache identity
        self.trust_remote_code = trust_remote_code
        self.progress = progress
        self.device_type = "cuda" if torch.cuda.is_available() else "cpu"
        self.eos_tokens = eos_token_ids(SimpleNamespace(generation_config=generation_config), tokenizer)
        self.prefix_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.tokens = RequestTokens.of_tokenizer(tokenizer, self.prefix_token, max_length)
        self.generation_settings = CheckpointGeneration(generation_config, model_id)

    @classmethod
    def load(
        cls,
        model: str | None,
        *,
        dtype: str | None = None,
        max_length: int | None = None,
        batch_size: int | str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
    ) -> VLLMBackend:
        """Load ``model`` (alias, directory, .gguf or hub id) into a vLLM engine. A GGUF is loaded through the
        same dense copy the HF backend makes (vLLM's own GGUF loader dequantises with other kernels)."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm import LLM

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = dtype or default_dtype(device_type)
        if dtype not in DTYPES:
            raise LlamabenchError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}")
        source = resolve_model(model)
        pinned = pin(source) if source.is_local else None  # checked again once the engine has read the files
        location = checkpoint_location(source, pinned)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
            config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise LlamabenchError(
                f"model {source.name} could not be loaded from {location}: {first_line(exc, limit=1000)}; "
                "check the path is a complete checkpoint (offline users: hub ids need a local copy)"
            ) from exc
        try:
            generation_config = GenerationConfig.from_pretrained(location)
        except OSError:  # no generation_config.json: transformers' defaults, as the HF backend sees them
            generation_config = None
        max_length = effective_max_length(SimpleNamespace(config=config), tokenizer, max_length, source.name)
        # Scoring feeds a window's max_length + 1 tokens (the last one's logits are dropped, as the HF backend
        # never feeds it) and vLLM generates at least one token after a prompt, so it is given two positions more
        # than the window; past the trained positions only when the window fills them, and then those positions
        # predict nothing that is read.
        model_len = max_length + 2
        trained = trained_positions(SimpleNamespace(config=config))
        if trained is not None and model_len > trained:
            os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        memory = gpu_memory_utilization or DEFAULT_MEMORY[device_type]
        settings = {"tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager}
        try:
            llm = LLM(
                model=location,
                tokenizer=location,
                dtype=dtype,
                max_model_len=model_len,
                gpu_memory_utilization=memory,
                trust_remote_code=trust_remote_code,
                generation_config="vllm",  # every sampling setting is given per request
                logprobs_mode="raw_logprobs",
                max_num_seqs=batch_size if isinstance(batch_size, int) else None,
                seed=0,
                **settings,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise LlamabenchError(
                f"vLLM could not start model {source.name} from {location}: "
                f"{first_line(exc, limit=1000) or type(exc).__name__}; on a CPU lower --gpu-memory-utilization "
                f"(now {memory}, a share of host memory), or --max-length"
            ) from exc
        if pinned is not None and not source.gguf_file:  # a GGUF was checked as its dense copy was written
            pinned.check("loaded")
        content = pinned.fingerprint if pinned else fingerprint(source)
        return cls(
            llm,
            tokenizer,
            generation_config,
            model_id=source.name,
            model_fingerprint=content or Backend.fingerprint,
            max_length=max_length,
            dtype=dtype,
            settings=settings,
            trust_remote_code=trust_remote_code,
        )

    def info(self) -> BackendInfo:
        return BackendInfo(
            model=self.model_id,
            fingerprint=self.fingerprint,
            max_length=self.max_length,
            dtype=self.dtype,
            kv_cache="vllm-paged",
            trust_remote_code=self.trust_remote_code,
            generation_settings=self.generation_settings.record(),
            tokenizer=self.tokenizer_hash,
            device=self.device_type,
            # Another engine computes other floating-point sums: its name and version, how it splits and runs
            # the model, and the libraries that tokenise, all change a stored number.
            engine=(
                "engine=vllm",
                f"vllm={self.vllm.__version__}",
                *(f"{name}={value}" for name, value in sorted(self.settings.items())),
                f"prefix={self.prefix_token}",
                f"device={self.device_type}",
                f"eos={self.eos_tokens}",
                f"torch={torch.__version__}",
                f"transformers={transformers.__version__}",
                f"tokenizers={tokenizers.__version__}",
                f"llamabench={__version__}",
            ),
        )

    def apply_chat_template(self, text: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            return super().apply_chat_template(text)
        messages = [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int]:
        return [self.tokens.truncated(request) for request in requests]

    # -- scoring -------------------------------------------------------------------------------

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        items = [self.tokens.loglikelihood_item(r.context, r.continuation) for r in requests]
        return self._score(items, "loglikelihood", on_done)

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        windows_per_request = [self.tokens.rolling_items(r) for r in requests]
        totals = RollingTotals(windows_per_request, on_done)
        flat = [window for windows in windows_per_request for window in windows]
        self._score(flat, "perplexity windows", totals.add)
        return [totals.result(request) for request in range(len(requests))]

    def _score(self, items: list[ScoreItem], what: str, on_done: OnDone | None) -> list[tuple[float, bool]]:
        """(log-likelihood, is-greedy) of each item from the log-probability and rank vLLM reports for each of
        its target tokens (one token is generated per item and thrown away: vLLM generates at least one)."""
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        results: list[tuple[float, bool]] = []
        with self._progress(len(items), what) as bar:
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                prompts = [{"prompt_token_ids": item.tokens} for item in chunk]
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
                scored = [_item_score(item, out.prompt_logprobs) for item, out in zip(chunk, outputs, strict=True)]
                results += scored
                if on_done is not None:
                    on_done(list(range(start, start + len(chunk))), scored)
                bar.update(len(chunk))
        return results

    def _progress(self, total: int, what: str) -> tqdm:
        return tqdm(
            total=total, desc=terminal(f"{self.model_id}: {what}"), disable=not self.progress or not total, unit="seq"
        )

    # -- generation ----------------------------------------------------------------------------

    def require_generation(self, task: str | None = None) -> None:
        self.generation_settings.require(task)
        if self.generation_settings.settings:
            where = f"task {task}: " if task else ""
            raise LlamabenchError(
                f"{where}model {self.model_id}'s generation_config.json sets "
                f"{', '.join(sorted(self.generation_settings.settings))}, which the transformers engine applies "
                "and --engine vllm does not; run this model's generation tasks with --engine hf"
            )

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        if requests:
            self.require_generation()
        prompts, params = [], []
        for request in requests:
            for what, text in [("prompt", request.prompt), *(("stop sequence", stop) for stop in request.until)]:
                require_text(text, what)
            prompts.append({"prompt_token_ids": self.tokens.generation_prompt(request)})
            params.append(self._sampling(request))
        results: list[str] = []
        with self._progress(len(requests), "generation") as bar:
            for start in range(0, len(requests), CHUNK):
                chunk = slice(start, start + CHUNK)
                outputs = self.llm.generate(prompts[chunk], params[chunk], use_tqdm=False)
                texts = [
                    self._text(output.outputs[0].token_ids, request.until)
                    for output, request in zip(outputs, requests[chunk], strict=True)
                ]
                results += texts
                if on_done is not None:
                    on_done(list(range(start, start + len(texts))), texts)
                bar.update(len(texts))
        return results

    def _sampling(self, request: GenerationRequest):
        """Greedy: the argmax of the raw logits. Sampled: temperature 1 over the whole vocabulary, from vLLM's
        generator seeded per request with ``request.seed`` (its own stream: not the HF engine's sample)."""
        return self.vllm.SamplingParams(
            max_tokens=request.max_new_tokens,
            temperature=0.0 if request.greedy else 1.0,
            seed=None if request.greedy else request.seed,
            stop=[stop for stop in request.until if stop],
            stop_token_ids=self.eos_tokens,
            skip_special_tokens=True,
        )

    def _text(self, token_ids: Sequence[int], until: tuple[str, ...]) -> str:
        """The new tokens up to the first end-of-sequence id, decoded as the HF engine decodes them and cut at
        the earliest stop string (vLLM stops at one, the cut is the contract's)."""
        kept = list(takewhile(lambda token: token not in self.eos_tokens, token_ids))
        return cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True), until)


def _item_score(item: ScoreItem, prompt_logprobs) -> tuple[float, bool]:
    """Sum of the target tokens' log-probabilities, and whether each was the argmax (rank 1) at its position."""
    first = len(item.tokens) - item.n_target
    picked = [prompt_logprobs[position][item.tokens[position]] for position in range(first, len(item.tokens))]
    values = torch.tensor([logprob.logprob for logprob in picked], dtype=torch.float64)
    require_finite(values, "log-probabilities")
    return float(values.sum()), all(logprob.rank == 1 for logprob in picked)
