"""The vLLM engine (``--engine vllm``): the backend contract of ``base.py`` answered by vLLM's offline ``LLM``.

Tokenisation is llamabench's own (``common/token_backend.py``, the transformers backend's rules and windows): vLLM is
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

import torch

from llamabench.backends.base import Backend, OnDone
from llamabench.backends.common.model_facts import effective_max_length, resolve_dtype, trained_positions
from llamabench.backends.common.request_tokens import GenerationJob
from llamabench.backends.common.score_items import ScoreItem
from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.common.tokenizer_backend import EngineDecided, TokenizerBackend
from llamabench.backends.loading.load import checkpoint_location
from llamabench.backends.loading.model_source import fingerprint, pin, resolve_model
from llamabench.backends.vllm.options import NAME, VLLMOptions
from llamabench.errors import LlamabenchError, first_line

# Requests handed to vLLM at once: it schedules within them as it likes; on_done is called after each chunk, so
# a kill loses at most one chunk.
CHUNK = 256
# vLLM's share of memory when --gpu-memory-utilization is not given: its own default on a GPU; on a CPU the share
# of host memory it reserves for the KV cache, where its default (0.92) does not start beside anything else.
DEFAULT_MEMORY = {"cuda": 0.9, "cpu": 0.15}


class VLLMBackend(TokenizerBackend):
    """A causal LM run by vLLM in this process; ``load`` builds it from ``--model`` as the HF backend would."""

    engine_name = NAME

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
        options: VLLMOptions,
        progress: bool = True,
    ):
        import vllm

        super().__init__(
            tokenizer,
            generation_config,
            model_id=model_id,
            model_fingerprint=model_fingerprint,
            max_length=max_length,
            trust_remote_code=options.trust_remote_code,
            progress=progress,
        )
        self.llm = llm
        self.vllm = vllm
        self.dtype = dtype
        # The engine settings that change numbers, for the cache identity.
        self.settings = {"tensor_parallel_size": options.tensor_parallel_size, "enforce_eager": options.enforce_eager}
        self.device_type = "cuda" if torch.cuda.is_available() else "cpu"

    @classmethod
    def load(cls, model: str | None, options: VLLMOptions) -> VLLMBackend:
        """Load ``model`` (alias, directory, .gguf or hub id) into a vLLM engine. A GGUF is loaded through the
        same dense copy the HF backend makes (vLLM's own GGUF loader dequantises with other kernels)."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm import LLM

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = resolve_dtype(options.dtype, device_type)
        trust_remote_code = options.trust_remote_code
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
        max_length = effective_max_length(SimpleNamespace(config=config), tokenizer, options.max_length, source.name)
        # Scoring feeds a window's max_length + 1 tokens (the last one's logits are dropped, as the HF backend
        # never feeds it) and vLLM generates at least one token after a prompt, so it is given two positions more
        # than the window; past the trained positions only when the window fills them, and then those positions
        # predict nothing that is read.
        model_len = max_length + 2
        trained = trained_positions(SimpleNamespace(config=config))
        if trained is not None and model_len > trained:
            os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        memory = options.gpu_memory_utilization or DEFAULT_MEMORY[device_type]
        engine_args = {
            "model": location,
            "tokenizer": location,
            "dtype": dtype,
            "max_model_len": model_len,
            "gpu_memory_utilization": memory,
            "trust_remote_code": trust_remote_code,
            "generation_config": "vllm",  # every sampling setting is given per request
            "logprobs_mode": "raw_logprobs",
            "max_num_seqs": options.batch_size if isinstance(options.batch_size, int) else None,
            "seed": 0,
            "tensor_parallel_size": options.tensor_parallel_size,
            "enforce_eager": options.enforce_eager,
        }
        try:
            llm = LLM(**engine_args)
        except (OSError, ValueError, RuntimeError) as exc:
            raise LlamabenchError(
                f"vLLM could not start model {source.name} from {location}: "
                f"{first_line(exc, limit=1000) or type(exc).__name__}; on a CPU lower --gpu-memory-utilization "
                f"(now {memory}, a share of host memory), or --max-length"
            ) from exc
        if pinned is not None and not source.gguf_file:  # a GGUF was checked as its dense copy was written
            pinned.check("loaded")
        content = pinned.fingerprint if pinned else fingerprint(source)
        identity = {"model_id": source.name, "model_fingerprint": content or Backend.fingerprint}
        return cls(llm, tokenizer, generation_config, **identity, max_length=max_length, dtype=dtype, options=options)

    def close(self) -> None:
        """Shut vLLM's engine core down now (its workers, KV cache and process groups), not in a finalizer at
        interpreter exit, when torch's process groups are already gone (a ``ValueError: Invalid process group
        specified`` traceback after a successful run); the next model then loads into the memory this one held."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def decided(self) -> EngineDecided:
        # Another engine computes other floating-point sums: its name and version and how it splits and runs the
        # model change a stored number.
        return EngineDecided(
            dtype=self.dtype,
            kv_cache="vllm-paged",
            device=self.device_type,
            engine=(
                "engine=vllm",
                f"vllm={self.vllm.__version__}",
                *(f"{name}={value}" for name, value in sorted(self.settings.items())),
            ),
            placement=(f"device={self.device_type}",),
        )

    # -- scoring -------------------------------------------------------------------------------

    def score_items(self, items: list[ScoreItem], finished: OnDone, *, share_prefixes: bool) -> None:
        """(log-likelihood, is-greedy) of each item from the log-probability and rank vLLM reports for each of
        its target tokens (one token is generated per item and thrown away: vLLM generates at least one)."""
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            prompts = [{"prompt_token_ids": item.tokens} for item in chunk]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            scored = [_item_score(item, out.prompt_logprobs) for item, out in zip(chunk, outputs, strict=True)]
            finished(list(range(start, start + len(chunk))), scored)

    # -- generation ----------------------------------------------------------------------------

    def require_generation(self, task: str | None = None) -> None:
        super().require_generation(task)
        if self.generation_settings.settings:
            where = f"task {task}: " if task else ""
            raise LlamabenchError(
                f"{where}model {self.model_id}'s generation_config.json sets "
                f"{', '.join(sorted(self.generation_settings.settings))}, which the transformers engine applies "
                "and --engine vllm does not; run this model's generation tasks with --engine hf"
            )

    def generate_jobs(self, jobs: list[GenerationJob], finished: OnDone) -> None:
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            prompts = [{"prompt_token_ids": job.prompt} for job in chunk]
            outputs = self.llm.generate(prompts, [self._sampling(job) for job in chunk], use_tqdm=False)
            texts = [self._text(out.outputs[0].token_ids, job.until) for out, job in zip(outputs, chunk, strict=True)]
            finished(list(range(start, start + len(texts))), texts)

    def _sampling(self, job: GenerationJob):
        """Greedy: the argmax of the raw logits. Sampled: temperature 1 over the whole vocabulary, from vLLM's
        generator seeded per request with its seed (its own stream: not the HF engine's sample)."""
        return self.vllm.SamplingParams(
            max_tokens=job.max_new,
            temperature=0.0 if job.seed is None else 1.0,
            seed=job.seed,
            stop=[stop for stop in job.until if stop],
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
    return float(values.sum()), all(logprob.rank == 1 for logprob in picked)  # TokenBackend refuses a non-finite sum
