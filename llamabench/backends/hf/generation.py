"""Continuous-batching generation: a finished row frees its slot at once and the next waiting request starts there.

The running rows share one key/value cache (transformers' ``DynamicCache``), a row per request and a column per
position a pass computed: a 2D attention mask hides each row's padding and rejected draft tokens, and explicit
position ids count each row's own tokens, so a row computes what it would alone. A pass gives every row its
newest token and, for a greedy row, draft tokens copied from its own text (``draft_lookup``): the row keeps the
tokens the model chose up to the first draft token it got wrong, so drafts change the number of passes, not the
text. Finished rows leave by index selection; waiting requests are prefilled in groups of similar length
(``step_cost``) and joined to the running batch, both sides padded on the left to the wider one.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, LogitsProcessorList

from llamabench.backends.common.generation_config import CheckpointGeneration
from llamabench.backends.common.request_tokens import GenerationJob
from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.finite import require_finite
from llamabench.backends.hf.batching import release_memory
from llamabench.backends.hf.checkpoint_generation import logits_device, process_row, request_processors
from llamabench.backends.hf.draft_lookup import DRAFT_LIMIT, DraftLookup
from llamabench.backends.hf.jobs import GenerationStats, attends_by_column, seeded_draws
from llamabench.backends.hf.prompt_prefixes import (
    MIN_SHARED,
    NEVER,
    NO_MATCH,
    PrefixMatch,
    PromptPrefixes,
    common_prefix_groups,
)
from llamabench.backends.hf.step_cost import draft_width, fixed_tokens, prefill_chunks
from llamabench.backends.hf.stops import StopCheck
from llamabench.errors import LlamabenchError

# Cache columns beyond the widest row's own tokens (holes left by rejected drafts) tolerated before repacking.
COMPACT_SLACK = 32

# Called with the indices (into the jobs) of the requests one step finished and their texts.
OnFinished = Callable[[list[int], list[str]], None]


@dataclass
class _Row:
    """A running request: its job index, the tokens generated so far, and its own sampling generator."""

    job: int
    stop: StopCheck
    generator: torch.Generator | None
    # Greedy rows without processors only: a sampled or processed token is not the logits' one choice to check.
    drafts: DraftLookup | None
    processors: LogitsProcessorList | None  # the checkpoint's generation settings for this request alone
    tokens: list[int] = field(default_factory=list)


class ContinuousBatcher:
    """Runs generation jobs through at most ``slots`` concurrent rows of one model."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        eos_tokens: Sequence[int],
        pad_token: int,
        device: torch.device,
        settings: CheckpointGeneration | None = None,
    ):
        self.model = model
        self.settings = settings
        self.logits_device = logits_device(model)
        self.tokenizer = tokenizer
        self.eos_tokens = frozenset(eos_tokens)
        self.pad_token = pad_token
        self.device = device
        self.fixed = fixed_tokens(device)
        self.windowed = attends_by_column(model)
        self.stats = GenerationStats()

    def run(self, jobs: Sequence[GenerationJob], slots: int, on_finished: OnFinished) -> None:
        """Generate every job, reporting each as it finishes; on out-of-memory the running rows restart (a row's
        output depends only on its own job, so a restart reproduces it) with half the slots."""
        # Prompts in token order, so those sharing a prefix run close together and find it in the prefix store
        # (kept for this call only: the model may change between calls); the longest first, to meet OOM early.
        waiting = deque(sorted(range(len(jobs)), key=lambda j: jobs[j].prompt))
        if waiting:
            longest = max(waiting, key=lambda j: len(jobs[j].prompt))
            waiting.remove(longest)
            waiting.appendleft(longest)
        prefixes = PromptPrefixes(min_shared=NEVER if self.windowed else MIN_SHARED)
        while waiting:
            try:
                _Batch(self, jobs, slots, on_finished, prefixes).drain(waiting)
            except torch.OutOfMemoryError as exc:
                if slots == 1:
                    raise LlamabenchError(
                        "out of GPU memory generating a single sequence; use a smaller --max-length, "
                        "--dtype bfloat16 or a larger GPU"
                    ) from exc
                slots //= 2
            release_memory()


class _Batch:
    """The running rows and their shared cache; ``drain`` runs until no job waits and no row runs. When the
    batch fails, every job it took and has not reported (running, or admitted in a pass that failed) goes back
    to the front of the queue."""

    def __init__(
        self,
        engine: ContinuousBatcher,
        jobs: Sequence[GenerationJob],
        slots: int,
        on_finished: OnFinished,
        prefixes: PromptPrefixes,
    ):
        self.engine, self.jobs, self.slots, self.on_finished = engine, jobs, slots, on_finished
        self.prefixes = prefixes
        self.rows: list[_Row] = []
        self.reported: set[int] = set()
        self.cache = DynamicCache()
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=engine.device)  # [rows, cache columns]
        self.next_input = torch.zeros(0, dtype=torch.long, device=engine.device)  # each row's newest token

    def drain(self, waiting: deque[int]) -> None:
        admitting: list[int] = []
        try:
            while waiting or self.rows:
                free = self.slots - len(self.rows)
                # Freed slots are filled a quarter of the batch at a time, not one by one: each admission is a
                # pass of its own, whose fixed cost (see step_cost) a group shares.
                if waiting and free and (free >= max(1, self.slots // 4) or free >= len(waiting) or not self.rows):
                    admitting = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                    self._admit(admitting)
                    admitting = []
                else:
                    self._step()
        except torch.OutOfMemoryError:
            taken = dict.fromkeys([row.job for row in self.rows] + admitting)  # in order, once each
            waiting.extendleft(reversed([job for job in taken if job not in self.reported]))
            raise

    @torch.inference_mode()
    def _admit(self, jobs: list[int]) -> None:
        """Prefill ``jobs``, take each one's first token, and join them to the batch. A prompt sharing a long
        prefix with a recent prompt reuses that prefix's keys and values; admitted prompts that share one with
        each other have it prefilled once first (see prompt_prefixes). Prompts of very different lengths run in
        separate passes rather than padded to the longest (see step_cost)."""
        prompts = [self.jobs[j].prompt for j in jobs]
        matches = [self.prefixes.match(prompt) for prompt in prompts]
        unmatched = [prompt for prompt, match in zip(prompts, matches, strict=True) if match.stored is None]
        shared = common_prefix_groups(unmatched, self.prefixes.min_shared)
        if shared:
            for chunk in prefill_chunks([len(prefix) for prefix in shared], self.engine.fixed):
                self._prefill([list(shared[i]) for i in chunk], [NO_MATCH] * len(chunk))
            # The unmatched look again, now that their shared prefixes are stored; a matched prompt keeps its
            # match (any match reuses exact keys and values, so only how much is saved could differ).
            matches = [
                match if match.stored else self.prefixes.match(prompt)
                for prompt, match in zip(prompts, matches, strict=True)
            ]
        rests = [len(prompt) - match.length for prompt, match in zip(prompts, matches, strict=True)]
        for chunk in prefill_chunks(rests, self.engine.fixed):
            cache, mask, logits = self._prefill([prompts[i] for i in chunk], [matches[i] for i in chunk])
            new_rows = [self._new_row(jobs[i]) for i in chunk]
            self._join(cache, mask, new_rows)
            self._take(logits, first_row=len(self.rows) - len(new_rows))

    def _prefill(
        self, prompts: list[list[int]], matches: list[PrefixMatch]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Run each prompt after its matched prefix's cached keys and values; return the rows' cache (each row:
        its prefix, then its rest, each left-padded), its mask, and each row's next-token logits. Every prompt's
        whole cache goes into the prefix store."""
        device = self.engine.device
        past = max(match.length for match in matches)
        rests = [prompt[match.length :] for prompt, match in zip(prompts, matches, strict=True)]
        width = max(len(rest) for rest in rests)
        input_ids = torch.full((len(prompts), width), self.engine.pad_token, dtype=torch.long)
        mask = torch.zeros(len(prompts), past + width, dtype=torch.long)
        for r, (rest, match) in enumerate(zip(rests, matches, strict=True)):
            input_ids[r, width - len(rest) :] = torch.tensor(rest)
            mask[r, past - match.length : past] = 1
            mask[r, past + width - len(rest) :] = 1
        lengths = torch.tensor([match.length for match in matches])
        self.engine.stats.reused_prompt_tokens += int(lengths.sum())
        positions = _positions(lengths, mask[:, past:])
        cache = DynamicCache()
        if past:
            reference = next(match.stored for match in matches if match.stored is not None)
            for layer in range(len(reference.keys)):
                keys, values = [], []
                for match in matches:
                    source = match.stored or reference
                    keys.append(_pad_left(source.keys[layer][:, :, : match.length], past, 2))
                    values.append(_pad_left(source.values[layer][:, :, : match.length], past, 2))
                cache.update(torch.cat(keys), torch.cat(values), layer)
        mask = mask.to(device)
        self.engine.stats.forwards += 1
        logits = self.engine.model(
            input_ids=input_ids.to(device),
            attention_mask=mask,
            position_ids=positions.to(device),
            **{cache_keyword(self.engine.model): cache},
            use_cache=True,
            logits_to_keep=1,
        ).logits
        for r, prompt in enumerate(prompts):
            if len(prompt) >= self.prefixes.min_shared:
                columns = mask[r].nonzero()[:, 0]  # the prompt's own tokens, in order
                keys = [layer.keys[r : r + 1, :, columns] for layer in cache.layers]
                values = [layer.values[r : r + 1, :, columns] for layer in cache.layers]
                self.prefixes.add(prompt, keys, values)
        return cache, mask, logits

    def _new_row(self, job: int) -> _Row:
        engine, spec = self.engine, self.jobs[job]
        generator = None if spec.seed is None else torch.Generator().manual_seed(spec.seed)
        processors = None
        if engine.settings is not None:
            length, eos = len(spec.prompt), engine.eos_tokens
            processors = request_processors(engine.settings, length, spec.max_new, eos, engine.logits_device)
        plain = spec.seed is None and processors is None
        drafts = DraftLookup(spec.prompt) if plain and not engine.windowed else None
        return _Row(job, StopCheck(engine.tokenizer, spec.until), generator, drafts, processors)

    def _join(self, cache: DynamicCache, mask: torch.Tensor, rows: list[_Row]) -> None:
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
                mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
            self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.rows += rows
        self.next_input = torch.cat([self.next_input, torch.zeros(len(rows), dtype=torch.long, device=mask.device)])

    @torch.inference_mode()
    def _step(self) -> None:
        """One decoding pass for every running row: its newest token, then its draft tokens, if any (see
        draft_lookup; a row with fewer than the widest is padded, its padding masked)."""
        # A row never needs more draft tokens than the tokens it has left, less the one the pass gives anyway.
        offered = [
            row.drafts.draft(min(DRAFT_LIMIT, self.jobs[row.job].max_new - len(row.tokens) - 1)) if row.drafts else []
            for row in self.rows
        ]
        acceptance = [row.drafts.acceptance if row.drafts else 0.0 for row in self.rows]
        width = draft_width([len(draft) for draft in offered], acceptance, self.engine.fixed)
        drafts = [draft[:width] for draft in offered]
        tails = torch.full((len(self.rows), width), self.engine.pad_token, dtype=torch.long)
        new_columns = torch.zeros(len(self.rows), 1 + width, dtype=torch.long)
        for r, draft in enumerate(drafts):
            tails[r, : len(draft)] = torch.tensor(draft, dtype=torch.long)
            new_columns[r, : 1 + len(draft)] = 1
        device = self.engine.device
        new_columns = new_columns.to(device)
        positions = _positions(self.mask.sum(-1), new_columns)
        self.mask = torch.cat([self.mask, new_columns], dim=1)
        self.engine.stats.forwards += 1
        logits = self.engine.model(
            input_ids=torch.cat([self.next_input[:, None], tails.to(device)], dim=1),
            attention_mask=self.mask,
            position_ids=positions,
            **{cache_keyword(self.engine.model): self.cache},
            use_cache=True,
        ).logits
        self._take(logits, first_row=0, drafts=drafts)
        if self.rows and self.mask.shape[1] > COMPACT_SLACK + self.mask.sum(-1).max():
            self._select(list(range(len(self.rows))))

    def _take(self, logits: torch.Tensor, first_row: int, drafts: list[list[int]] | None = None) -> None:
        """Extend rows ``first_row:`` from ``logits`` ``[rows, positions, vocabulary]``, each row by its chosen
        token at every position its ``drafts`` got right and at the first they got wrong; then retire the rows
        that finished. A draft token's columns in the cache are kept if the model confirmed it, else masked."""
        self.engine.stats.row_steps += logits.shape[0] * logits.shape[1]
        rows = self.rows[first_row:]
        drafts = drafts or [[] for _ in rows]
        # Which positions hold finite logits, read once: a row uses its position 0 and, past it, one position for
        # each draft token it confirms; padding beside shorter drafts is never used, so it is not checked.
        finite = logits.isfinite().all(dim=-1).tolist()
        chosen = logits.argmax(dim=-1)
        # A row with processors (it has no drafts) chooses from its first position's logits as generate does:
        # processed, given its own prompt and tokens.
        scores = {
            r: process_row(row.processors, self.jobs[row.job].prompt + row.tokens, logits[r, 0])
            for r, row in enumerate(rows)
            if row.processors is not None
        }
        for r, processed in scores.items():
            chosen[r, 0] = processed.argmax()
        sampled = [r for r, row in enumerate(rows) if row.generator is not None]
        if sampled:  # each sampled row draws from its own generator, so its sample ignores its batch-mates
            row_scores = torch.stack([scores.get(r, logits[r, 0].float()) for r in sampled])
            drawn = seeded_draws(row_scores, [rows[r].generator for r in sampled])
            for r, token in zip(sampled, drawn, strict=True):
                chosen[r, 0] = token
        finished = []
        for r, (row, draft, choices) in enumerate(zip(rows, drafts, chosen.tolist(), strict=True)):
            confirmed = next((i for i, token in enumerate(draft) if token != choices[i]), len(draft))
            if not all(finite[r][: confirmed + 1]):
                require_finite(logits[r, : confirmed + 1], "logits while generating")
            self.engine.stats.drafted += len(draft)
            self.engine.stats.accepted += confirmed
            if row.drafts is not None:
                row.drafts.record(len(draft), confirmed)
            if any(self._extend(row, token) for token in choices[: confirmed + 1]):
                finished.append(first_row + r)
                continue
            self.next_input[first_row + r] = choices[confirmed]
            self.mask[first_row + r, self.mask.shape[1] - logits.shape[1] + 1 + confirmed :] = 0
        if finished:
            self._retire(finished)

    def _extend(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``; whether the row is now finished."""
        if token in self.engine.eos_tokens:
            return True
        row.tokens.append(token)
        if row.drafts is not None:
            row.drafts.extend([token])
        return len(row.tokens) == self.jobs[row.job].max_new or row.stop.hit(row.tokens)

    def _retire(self, finished: list[int]) -> None:
        decode = self.engine.tokenizer.decode
        jobs = [self.rows[r].job for r in finished]
        texts = [
            cut_at_stop(decode(self.rows[r].tokens, skip_special_tokens=True), self.jobs[j].until)
            for r, j in zip(finished, jobs, strict=True)
        ]
        # Reported before the cache is copied: if the copy runs out of memory, these rows are done, not lost.
        self.on_finished(jobs, texts)
        self.reported.update(jobs)
        gone = set(finished)
        self._select([r for r in range(len(self.rows)) if r not in gone])

    def _select(self, keep: list[int]) -> None:
        """Keep rows ``keep`` of the batch and drop the columns none of them uses. Where holes (rejected drafts,
        padding) would still exceed ``COMPACT_SLACK`` columns, each row's columns are repacked to the right in
        order instead: a stable sort of the row's 0/1 mask puts its masked columns first, its own after them."""
        self.rows = [self.rows[r] for r in keep]
        if not self.rows:
            self.next_input = self.next_input[:0]
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        width = int(mask.sum(-1).max())
        start = int(mask.any(dim=0).int().argmax())
        if mask.shape[1] - start <= width + COMPACT_SLACK:  # a slice: half the copying of a gather
            for layer in self.cache.layers:
                layer.keys = layer.keys[index, :, start:]
                layer.values = layer.values[index, :, start:]
            self.mask = mask[:, start:]
        else:
            columns = torch.sort(mask, dim=1, stable=True).indices[:, -width:]
            for layer in self.cache.layers:
                gather = columns[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
                layer.keys = layer.keys.index_select(0, index).gather(2, gather)
                layer.values = layer.values.index_select(0, index).gather(2, gather)
            self.mask = mask.gather(1, columns)
        self.next_input = self.next_input[index]


def _positions(before: torch.Tensor, new_columns: torch.Tensor) -> torch.Tensor:
    """Position ids of a pass's input columns: each row's own tokens count on from ``before`` (its tokens already
    in the cache), and a padding column repeats the position beside it (left padding the row's first, right
    padding its last). So no position falls past a row's own: one past the model's range would fail (learned
    positions) or change the pass's rotary frequencies (dynamic RoPE scaling takes the largest)."""
    return before[:, None] + (new_columns.cumsum(-1) - 1).clamp(min=0)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` zero-padded on the left along ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@functools.cache
def _forward_takes_cache(forward_class: type) -> bool:
    return "cache" in inspect.signature(forward_class.forward).parameters


def cache_keyword(model: torch.nn.Module) -> str:
    """The name a model's ``forward`` gives its key/value cache: ``cache`` in recent transformers (which warns, on
    every call, that ``past_key_values`` is deprecated), ``past_key_values`` before."""
    return "cache" if _forward_takes_cache(type(model)) else "past_key_values"
