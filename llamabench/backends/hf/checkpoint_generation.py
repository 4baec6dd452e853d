"""A checkpoint's honoured generation settings (``common/generation_config.py``) as transformers' own logits
processors, built per request in the order ``generate`` builds them, for both paths of the transformers engine
(continuous batching and ``--kv-cache static``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from llamabench.backends.common.generation_config import HONOURED, CheckpointGeneration

# What the static path passes to ``generate`` so it applies none of the honoured fields itself.
OFF = dict.fromkeys(HONOURED)


def request_processors(
    settings: CheckpointGeneration, prompt_length: int, max_new: int, eos_tokens: Sequence[int], device: torch.device
) -> LogitsProcessorList | None:
    """The honoured settings' processors for one request alone, in ``generate``'s order; None when none
    apply. Each is given the request's own tokens (prompt and generated, no padding)."""
    if not settings.settings:
        return None
    s, eos = settings.settings, torch.tensor(list(eos_tokens), device=device)
    processors = LogitsProcessorList()
    if "sequence_bias" in s:
        processors.append(SequenceBiasLogitsProcessor(sequence_bias=s["sequence_bias"]))
    if "repetition_penalty" in s:
        processors.append(RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
    if "no_repeat_ngram_size" in s:
        processors.append(NoRepeatNGramLogitsProcessor(s["no_repeat_ngram_size"]))
    if "bad_words_ids" in s:
        processors.append(NoBadWordsLogitsProcessor(s["bad_words_ids"], eos))
    if "min_length" in s:
        processors.append(MinLengthLogitsProcessor(s["min_length"], eos, device=device))
    if "min_new_tokens" in s:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, s["min_new_tokens"], eos, device=device))
    if "forced_bos_token_id" in s:
        processors.append(ForcedBOSTokenLogitsProcessor(s["forced_bos_token_id"]))
    if "forced_eos_token_id" in s:
        processors.append(
            ForcedEOSTokenLogitsProcessor(prompt_length + max_new, s["forced_eos_token_id"], device=device)
        )
    if "remove_invalid_values" in s:
        processors.append(InfNanRemoveLogitsProcessor())
    if "exponential_decay_length_penalty" in s:
        processors.append(ExponentialDecayLengthPenalty(s["exponential_decay_length_penalty"], eos, prompt_length))
    if "suppress_tokens" in s:
        processors.append(SuppressTokensLogitsProcessor(s["suppress_tokens"], device=device))
    if "begin_suppress_tokens" in s:
        # As generate: a one-token prompt with a forced first token starts suppressing one token later.
        late = prompt_length <= 1 and "forced_bos_token_id" in s
        processors.append(
            SuppressTokensAtBeginLogitsProcessor(s["begin_suppress_tokens"], prompt_length + late, device=device)
        )
    return processors


def logits_device(model) -> torch.device:
    """Where the model's logits come out (under a device map the head may sit on another GPU than the inputs),
    so the processors' tensors are built there."""
    head = model.get_output_embeddings()
    return (head if head is not None else model.get_input_embeddings()).weight.device


def process_row(processors: LogitsProcessorList, tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (one row's next-token logits) as ``generate`` hands them to token selection: in float32,
    through ``processors`` given the row's own ``tokens``."""
    ids = torch.tensor([list(tokens)], dtype=torch.long, device=logits.device)
    return processors(ids, logits.float()[None])[0]


class RowProcessors(LogitsProcessor):
    """The static path's per-row processors inside ``generate``: each left-padded row is given its own tokens
    only (its prompt from where its padding ends, and what it generated)."""

    def __init__(self, rows: Sequence[LogitsProcessorList | None], prompt_lengths: Sequence[int], width: int):
        self.rows, self.starts = rows, [width - length for length in prompt_lengths]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        for r, (processors, start) in enumerate(zip(self.rows, self.starts, strict=True)):
            if processors is not None:
                scores[r] = processors(input_ids[r : r + 1, start:], scores[r : r + 1].float())[0]
        return scores
