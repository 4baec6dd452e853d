"""Static batches through transformers' ``generate``: the path for ``--kv-cache static``, whose fixed-size cache
transformers compiles on CUDA. Each batch runs until its slowest row ends (continuous batching is in
``generation.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from llamabench.backends.common.generation_config import CheckpointGeneration
from llamabench.backends.common.request_tokens import GenerationJob
from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.finite import FiniteLogits
from llamabench.backends.hf.checkpoint_generation import OFF, RowProcessors, logits_device, request_processors
from llamabench.backends.hf.jobs import GenerationStats, seeded_draws
from llamabench.backends.hf.stops import StopCheck
from llamabench.errors import LlamabenchError


@torch.inference_mode()
def generate_static_batch(
    model,
    tokenizer,
    jobs: Sequence[GenerationJob],
    *,
    eos_tokens: list[int],
    pad_token: int,
    stats: GenerationStats,
    settings: CheckpointGeneration,
) -> list[str]:
    """Generate ``jobs``, which share ``max_new``, ``until`` and greediness, as one left-padded batch. The
    checkpoint's honoured generation settings run per row (see checkpoint_generation), not inside ``generate``,
    where some would count the padding."""
    prompts = [job.prompt for job in jobs]
    max_new, until, greedy = jobs[0].max_new, jobs[0].until, jobs[0].seed is None
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):  # left padding keeps every prompt's end at the same position
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    stopping = StoppingCriteriaList([_StopSequences(tokenizer, until, width)]) if until else None
    # Sampling draws each row's tokens from that row's own generator, so a sample depends on its request's
    # seed only, not on the batch it lands in; transformers then keeps the drawn token by greedy selection.
    device = model.get_input_embeddings().weight.device
    rows = [
        request_processors(settings, len(job.prompt), job.max_new, eos_tokens, logits_device(model)) for job in jobs
    ]
    # FiniteLogits first: it sees the model's own scores, before a processor or a sampler changes them.
    processors = LogitsProcessorList([FiniteLogits()])
    if any(rows):
        processors.append(RowProcessors(rows, [len(p) for p in prompts], width))
    if not greedy:  # after the settings' processors, as generate puts a caller's after its own
        processors.append(SeededSampler([job.seed for job in jobs]))
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=pad_token,
        cache_implementation="static",
        eos_token_id=eos_tokens,
        logits_processor=processors or None,
        stopping_criteria=stopping,
        **OFF,
    )
    generated = output[:, width:].tolist()
    stats.forwards += len(generated[0])
    stats.row_steps += len(generated) * len(generated[0])
    texts = [tokenizer.decode(_until_eos(row, eos_tokens), skip_special_tokens=True) for row in generated]
    return [cut_at_stop(text, until) for text in texts]


def _until_eos(tokens: list[int], eos_tokens: list[int]) -> list[int]:
    """A row's generated tokens before its first end-of-sequence token (what follows is padding)."""
    ends = [i for i, token in enumerate(tokens) if token in eos_tokens]
    return tokens[: ends[0]] if ends else tokens


class SeededSampler(LogitsProcessor):
    """Samples each row's next token at temperature 1 from its own seeded generator and leaves only that token
    possible, so greedy selection keeps it. One generator per row: a row's sample never depends on the others."""

    def __init__(self, seeds: Sequence[int | None]):
        if any(seed is None for seed in seeds):
            raise LlamabenchError("every sampled generation request needs a seed")
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        drawn = seeded_draws(scores, self.generators)
        only = torch.full_like(scores, -torch.inf)
        only[torch.arange(len(drawn)), torch.tensor(drawn, device=scores.device)] = 0.0
        return only


class _StopSequences(StoppingCriteria):
    """Marks a row finished as soon as its generated text contains a stop sequence (checked incrementally)."""

    def __init__(self, tokenizer, until: tuple[str, ...], prompt_width: int):
        self.check = StopCheck(tokenizer, until)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        rows = input_ids[:, self.prompt_width :].tolist()
        return torch.tensor([self.check.hit(row) for row in rows], device=input_ids.device)
