"""The transformers backend: batched scoring and generation for causal LMs on CPU or GPU."""

from __future__ import annotations

from dataclasses import asdict

import torch

from llamabench.backends.base import Backend, OnDone
from llamabench.backends.common.model_facts import (
    DTYPES,
    effective_max_length,
    refuse_logit_postprocessing,
    require_tokens_in_vocabulary,
    resolve_dtype,
)
from llamabench.backends.common.request_tokens import GenerationJob
from llamabench.backends.common.score_items import ScoreItem
from llamabench.backends.common.tokenizer_backend import EngineDecided, TokenizerBackend
from llamabench.backends.hf.batching import BatchPolicy, peak_memory
from llamabench.backends.hf.budget import BudgetInputs, budget_inputs, token_budget
from llamabench.backends.hf.generation import ContinuousBatcher
from llamabench.backends.hf.options import NAME
from llamabench.backends.hf.score_rows import LOGIT_ROWS, ScoreRow, plain_row, score_batch, shared_prefix_rows
from llamabench.backends.hf.static_generation import generate_static_batch
from llamabench.backends.loading.load import check_device_map, load_model_and_tokenizer
from llamabench.backends.loading.model_source import PinnedFiles, pin, resolve_model
from llamabench.config import KV_CACHES
from llamabench.errors import LlamabenchError


class HFBackend(TokenizerBackend):
    """Any transformers causal LM; GPU-batched by a token budget, fp32 on CPU by default."""

    engine_name = NAME

    def __init__(
        self,
        model,
        tokenizer,
        *,
        model_id: str,
        model_fingerprint: str = "unknown",
        batch_size: int | str = "auto",
        max_length: int | None = None,
        progress: bool = True,
        kv_cache: str = "dynamic",
        trust_remote_code: bool = False,
        pinned: PinnedFiles | None = None,
    ):
        if kv_cache not in KV_CACHES:
            raise LlamabenchError(f"--kv-cache {kv_cache} is not one of {', '.join(KV_CACHES)}")
        self.model = model
        self.kv_cache = kv_cache
        self.pinned = pinned  # the checkpoint's files, whose bytes the weights may still map (verify_identity)
        self.device = model.get_input_embeddings().weight.device  # where inputs go, also under a device map
        # The effective window, decided here once (--max-length was range-checked by RunConfig.validate) and read
        # from info().max_length by everything after.
        super().__init__(
            tokenizer,
            getattr(model, "generation_config", None),
            model_id=model_id,
            model_fingerprint=model_fingerprint,
            max_length=effective_max_length(model, tokenizer, max_length, model_id),
            trust_remote_code=trust_remote_code,
            progress=progress,
        )
        refuse_logit_postprocessing(model, model_id)
        require_tokens_in_vocabulary(model, tokenizer, model_id)
        self.pad_token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.budget: BudgetInputs | None = None  # what --batch-size auto's budget was computed from
        if batch_size == "auto":
            self.budget = budget_inputs(model, self.device, LOGIT_ROWS)
            self.policy = BatchPolicy(token_budget=token_budget(self.budget))
        else:
            self.policy = BatchPolicy(token_budget=0, max_items=int(batch_size))
        self.engine = ContinuousBatcher(
            model,
            tokenizer,
            eos_tokens=self.eos_tokens,
            pad_token=self.pad_token,
            device=self.device,
            settings=self.generation_settings,
        )

    @classmethod
    def load(
        cls,
        model: str | None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = "auto",
        max_length: int | None = None,
        trust_remote_code: bool = False,
        device_map: str | None = None,
        kv_cache: str = "dynamic",
    ) -> HFBackend:
        """Load ``model`` (alias, directory, .gguf or hub id) on ``device`` in ``dtype``; ``device_map`` (``auto``,
        ``balanced``, ``sequential``) spreads it over the visible GPUs instead (on a machine without one: the CPU)."""
        check_device_map(device_map, device)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            torch.device(device)
        except RuntimeError:
            raise LlamabenchError(f"--device {device} is not a device; use cpu, cuda, cuda:1, ...") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise LlamabenchError(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu")
        dtype = resolve_dtype(dtype, device)
        source = resolve_model(model)
        pinned = pin(source) if source.is_local else None  # checked again once the files are read
        loaded, tokenizer = load_model_and_tokenizer(
            source,
            dtype=DTYPES[dtype],
            device=device,
            trust_remote_code=trust_remote_code,
            device_map=device_map,
            pinned=pinned,
        )
        pinned = pinned or pin(source)  # a hub model's files are local once loaded
        return cls(
            loaded,
            tokenizer,
            model_id=source.name,
            model_fingerprint=pinned.fingerprint if pinned else Backend.fingerprint,
            pinned=pinned,
            batch_size=batch_size,
            max_length=max_length,
            kv_cache=kv_cache,
            trust_remote_code=trust_remote_code,
        )

    def decided(self) -> EngineDecided:
        return EngineDecided(
            dtype=str(self.model.dtype).removeprefix("torch."),
            kv_cache=self.kv_cache,
            device=str(self.device),
            placement=(
                f"device={self.device.type}",
                f"attention={getattr(self.model.config, '_attn_implementation', None)}",
            ),
        )

    def verify_identity(self) -> None:
        """The checkpoint's files hashed again. The weights are copied off the mapped files once loaded, but bytes
        written through a shared map between the hashing and that copy move no time stamp, so only the bytes show
        whether what was loaded is what the fingerprint names; a rewrite later in the run stops it too (the files
        no longer hold the fingerprinted weights). A model built in memory has no files and is not checked."""
        if self.pinned is not None:
            self.pinned.verify(self.model_id)

    def statistics(self) -> dict:
        return {
            "batch_sizes_used": dict(sorted(self.policy.sizes_used.items())),
            "peak_memory": peak_memory(self.device),
            **self._budget_record(),
        }

    def _budget_record(self) -> dict:
        if self.budget is None:
            return {}
        return {"token_budget": {"tokens": token_budget(self.budget), "inputs": asdict(self.budget)}}

    # -- scoring -------------------------------------------------------------------------------

    def score_items(self, items: list[ScoreItem], finished: OnDone, *, share_prefixes: bool) -> None:
        """Token-budget batches of rows; with ``share_prefixes``, items sharing the tokens before their targets
        run those tokens once (see score_rows)."""
        if share_prefixes:
            rows = shared_prefix_rows(items, max_tokens=self.max_length)
        else:
            rows = [plain_row(index, item) for index, item in enumerate(items)]
        for batch in self.policy.plan([len(row.tokens) for row in rows]):
            scored = self.policy.run([rows[b] for b in batch], self._score_batch)
            done = [index for b in batch for index in rows[b].items]
            finished(done, [result for row_results in scored for result in row_results])

    def _score_batch(self, rows: list[ScoreRow]) -> list[list[tuple[float, bool]]]:
        return score_batch(self.model, rows, self.pad_token)

    # -- generation ----------------------------------------------------------------------------

    def generate_jobs(self, jobs: list[GenerationJob], finished: OnDone) -> None:
        if self.kv_cache == "static":
            self._generate_static(jobs, finished)
        elif jobs:
            slots = self._generation_slots(jobs)
            self.policy.sizes_used[slots] += 1
            self.engine.run(jobs, slots, finished)

    def _generation_slots(self, jobs: list[GenerationJob]) -> int:
        """Concurrent rows: ``--batch-size N``, else as many of the longest request as the token budget holds."""
        if self.policy.max_items is not None:
            return min(self.policy.max_items, len(jobs))
        longest = max(len(job.prompt) + job.max_new for job in jobs)
        return max(1, min(len(jobs), self.policy.token_budget // longest))

    def _generate_static(self, jobs: list[GenerationJob], finished) -> None:
        """Batches of requests that share limits and greediness, each run by transformers' ``generate``."""
        groups: dict[tuple, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault((job.max_new, job.until, job.seed is None), []).append(index)
        for indices in groups.values():
            lengths = [len(jobs[i].prompt) + jobs[i].max_new for i in indices]
            for batch in self.policy.plan(lengths):
                texts = self.policy.run([jobs[indices[b]] for b in batch], self._generate_batch)
                finished([indices[b] for b in batch], texts)

    def _generate_batch(self, jobs: list[GenerationJob]) -> list[str]:
        return generate_static_batch(
            self.model,
            self.tokenizer,
            jobs,
            eos_tokens=self.eos_tokens,
            pad_token=self.pad_token,
            stats=self.engine.stats,
            settings=self.generation_settings,
        )
