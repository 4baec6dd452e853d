"""Continuous-batching generation: a finished row frees its slot at once and the next waiting request starts there.

The running rows share one left-padded key/value cache (transformers' ``DynamicCache``): every row's newest
token sits in the last column, a 2D attention mask hides each row's padding and explicit position ids count each
row's own tokens, so a row computes what it would alone. Finished rows leave by index selection; waiting requests
are prefilled together and joined to the running batch, both sides padded on the left to the wider one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from llamabench.backends.batching import release_memory
from llamabench.backends.prompt_prefixes import NO_MATCH, PrefixMatch, PromptPrefixes, common_prefix_groups
from llamabench.errors import LlamabenchError

# Called with the indices (into the jobs) of the requests one step finished and their texts.
OnFinished = Callable[[list[int], list[str]], None]


@dataclass(frozen=True)
class GenerationJob:
    """One request as the engine runs it: prompt tokens, its own limits, and its sampling seed (None: greedy)."""

    prompt: list[int]
    max_new: int
    until: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class GenerationStats:
    """Work done: ``row_steps`` counts every row of every forward pass that produced a next token."""

    row_steps: int = 0
    forwards: int = 0
    reused_prompt_tokens: int = 0  # prompt tokens whose keys and values came from the prefix store


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop sequence."""
    cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
    return text[:cut]


def seeded_draws(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> list[int]:
    """One token per row of ``logits``, drawn at temperature 1 from that row's own generator: a row's sample
    depends on its request's seed only, never on the batch it shares (both generation paths draw here)."""
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return [int(torch.multinomial(probs[row], 1, generator=generator)) for row, generator in enumerate(generators)]


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a generation: the model's generation config may list several (Llama-3-Instruct's
    ``<|eot_id|>`` beside ``<|end_of_text|>``), the tokenizer names one."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list | tuple) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return sorted({int(token) for token in ids if token is not None})


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


@dataclass
class _Row:
    """A running request: its job index, the tokens generated so far, and its own sampling generator."""

    job: int
    stop: StopCheck
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)


class ContinuousBatcher:
    """Runs generation jobs through at most ``slots`` concurrent rows of one model."""

    def __init__(self, model, tokenizer, *, eos_tokens: Sequence[int], pad_token: int, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_tokens = frozenset(eos_tokens)
        self.pad_token = pad_token
        self.device = device
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
        prefixes = PromptPrefixes()
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
    """The running rows and their shared cache; ``drain`` runs until no job waits and no row runs. A row that
    is running when the batch fails goes back to the front of the queue."""

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
        self.cache = DynamicCache()
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=engine.device)  # [rows, cache columns]
        self.next_input = torch.zeros(0, dtype=torch.long, device=engine.device)  # each row's newest token

    def drain(self, waiting: deque[int]) -> None:
        admitting: list[int] = []
        try:
            while waiting or self.rows:
                free = self.slots - len(self.rows)
                if waiting and free:
                    admitting = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                    self._admit(admitting)
                    admitting = []
                else:
                    self._step()
        except torch.OutOfMemoryError:
            running = [row.job for row in self.rows]
            waiting.extendleft(reversed(running + [job for job in admitting if job not in running]))
            raise

    @torch.inference_mode()
    def _admit(self, jobs: list[int]) -> None:
        """Prefill ``jobs``, take each one's first token, and join them to the batch. A prompt sharing a long
        prefix with a recent prompt reuses that prefix's keys and values; admitted prompts that share one with
        each other have it prefilled once first (see prompt_prefixes)."""
        prompts = [self.jobs[j].prompt for j in jobs]
        matches = [self.prefixes.match(prompt) for prompt in prompts]
        unmatched = [prompt for prompt, match in zip(prompts, matches, strict=True) if match.stored is None]
        shared = common_prefix_groups(unmatched, self.prefixes.min_shared)
        if shared:
            self._prefill([list(prefix) for prefix in shared], [NO_MATCH] * len(shared))
            # The unmatched look again, now that their shared prefixes are stored; a matched prompt keeps its
            # match (any match reuses exact keys and values, so only how much is saved could differ).
            matches = [
                match if match.stored else self.prefixes.match(prompt)
                for prompt, match in zip(prompts, matches, strict=True)
            ]
        cache, mask, logits = self._prefill(prompts, matches)
        new_rows = [self._new_row(j) for j in jobs]
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
        positions = lengths[:, None] + (mask[:, past:].cumsum(-1) - 1).clamp(min=0)
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
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        for r, prompt in enumerate(prompts):
            if len(prompt) >= self.prefixes.min_shared:
                columns = mask[r].nonzero()[:, 0]  # the prompt's own tokens, in order
                keys = [layer.keys[r : r + 1, :, columns] for layer in cache.layers]
                values = [layer.values[r : r + 1, :, columns] for layer in cache.layers]
                self.prefixes.add(prompt, keys, values)
        return cache, mask, logits

    def _new_row(self, job: int) -> _Row:
        seed = self.jobs[job].seed
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return _Row(job, StopCheck(self.engine.tokenizer, self.jobs[job].until), generator)

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
        """One decoding step for every running row."""
        positions = self.mask.sum(-1, keepdim=True)  # each row's own token count: its next position
        self.mask = torch.cat([self.mask, torch.ones_like(positions)], dim=1)
        self.engine.stats.forwards += 1
        logits = self.engine.model(
            input_ids=self.next_input[:, None],
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        ).logits[:, -1]
        self._take(logits, first_row=0)

    def _take(self, logits: torch.Tensor, first_row: int) -> None:
        """Choose the next token of rows ``first_row:`` from ``logits``, then retire the rows that finished."""
        self.engine.stats.row_steps += len(logits)
        rows = self.rows[first_row:]
        chosen = logits.argmax(dim=-1)
        sampled = [r for r, row in enumerate(rows) if row.generator is not None]
        if sampled:  # each sampled row draws from its own generator, so its sample ignores its batch-mates
            drawn = seeded_draws(logits[sampled], [rows[r].generator for r in sampled])
            for r, token in zip(sampled, drawn, strict=True):
                chosen[r] = token
        self.next_input[first_row:] = chosen
        finished = [first_row + r for r, token in enumerate(chosen.tolist()) if self._extend(rows[r], token)]
        if finished:
            self._retire(finished)

    def _extend(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``; whether the row is now finished."""
        if token in self.engine.eos_tokens:
            return True
        row.tokens.append(token)
        return len(row.tokens) == self.jobs[row.job].max_new or row.stop.hit(row.tokens)

    def _retire(self, finished: list[int]) -> None:
        decode = self.engine.tokenizer.decode
        jobs = [self.rows[r].job for r in finished]
        texts = [
            cut_at_stop(decode(self.rows[r].tokens, skip_special_tokens=True), self.jobs[j].until)
            for r, j in zip(finished, jobs, strict=True)
        ]
        gone = set(finished)
        keep = [r for r in range(len(self.rows)) if r not in gone]
        self.rows = [self.rows[r] for r in keep]
        if self.rows:
            index = torch.tensor(keep, device=self.mask.device)
            # Columns that are padding in every remaining row are dropped with the finished rows.
            start = int(self.mask[index].any(dim=0).int().argmax())
            for layer in self.cache.layers:
                layer.keys = layer.keys[index, :, start:]
                layer.values = layer.values[index, :, start:]
            self.mask = self.mask[index, start:]
            self.next_input = self.next_input[index]
        else:
            self.next_input = self.next_input[:0]
        self.on_finished(jobs, texts)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` zero-padded on the left along ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
