"""A checkpoint's own generation config (``generation_config.json``), applied as transformers' ``generate`` applies
it to one prompt alone: the call lm-eval's HF backend makes (``do_sample=False`` for greedy tasks, the length
given per request), which reads every other field from the model's generation config.

Each field falls in one of three classes:

- *honoured*: its logits processor runs on each request's own tokens, on both engine paths (continuous batching
  and ``--kv-cache static``), so a request's text does not depend on the batch it shares. transformers' own
  processors do the work, built per request, in the order ``generate`` builds them. (Given to ``generate`` on
  the static path, some would count a row's left padding: ``min_length`` its length, ``forced_bos_token_id`` its
  first position, ``no_repeat_ngram_size`` its n-grams.)
- *ignored*: a greedy ``generate`` with the length given does not read it (the sampling knobs, ``max_length``),
  or it changes how, not what, ``generate`` computes (caches, outputs, special-token ids handled elsewhere).
  Sampled requests draw at temperature 1 from the processed distribution on both paths (see ``seeded_draws``),
  so the sampling knobs do not apply to them either.
- *refused*: anything else ``generate`` knows (beam and contrastive search, guidance, several sequences, stop
  strings, time limits, watermarks, ...): it makes ``generate`` other than one sequence per request, chosen
  token by token from that request's own logits, which is all either path runs.

Fields transformers does not know are not read by ``generate`` and are ignored here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
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

from llamabench.errors import LlamabenchError

# Honoured fields, each with the values that make its processor a no-op (``generate`` adds none for them).
HONOURED: dict[str, tuple] = {
    "sequence_bias": (None,),
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
}

IGNORED = frozenset(
    {
        # read only when sampling, which a greedy call (and our seeded draw) does not do
        *("do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p", "top_h", "epsilon_cutoff"),
        *("eta_cutoff", "renormalize_logits"),
        # the length: every request gives max_new_tokens, which takes precedence
        *("max_length", "max_new_tokens"),
        # special tokens: end-of-sequence ids are read by stops.eos_token_ids; padding is masked
        *("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"),
        # how, not what: caches, compilation, returned extras
        *("use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile"),
        *("prefill_chunk_size", "low_memory", "output_attentions", "output_hidden_states", "output_scores"),
        *("output_logits", "return_dict_in_generate", "transformers_version", "_from_model_config"),
        # encoder-decoder only: a decoder-only model's generate ignores them
        *("encoder_repetition_penalty", "encoder_no_repeat_ngram_size"),
        # beam-search options: inert while num_beams is 1 (refused otherwise)
        *("early_stopping", "length_penalty", "diversity_penalty"),
        # assisted decoding: inert unless generate is given an assistant model, which neither path does
        *("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"),
        *("assistant_lookbehind", "target_lookbehind", "is_assistant", "continuous_batching_config"),
    }
)

# Refused fields' values that leave generate one greedy sequence per request.
_NEUTRAL = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "guidance_scale": 1.0,
    "token_healing": False,
}

# What the static path passes to ``generate`` so it applies none of the honoured fields itself.
OFF = dict.fromkeys(HONOURED)


class CheckpointGeneration:
    """The generation settings of one model: the honoured ones in effect, and any refused one."""

    def __init__(self, config: GenerationConfig | None, model_id: str):
        values = (config or GenerationConfig()).to_dict()
        self.model_id = model_id
        self.settings = {
            name: values[name] for name, no_op in HONOURED.items() if name in values and values[name] not in no_op
        }
        known = GenerationConfig().to_dict().keys()
        self.refused = [
            f"{name}={values[name]!r}"
            for name in sorted(known)
            if name not in HONOURED
            and name not in IGNORED
            and values.get(name) is not None
            and values[name] != _NEUTRAL.get(name)
        ]

    def record(self) -> dict | None:
        """The honoured settings in effect, for the manifest and the cache identity (None: none)."""
        return {name: _plain(value) for name, value in sorted(self.settings.items())} or None

    def require(self, task: str | None = None) -> None:
        """Refuse generation when the model's config asks ``generate`` for more than one sequence per request."""
        if self.refused:
            where = f"task {task}: " if task else ""
            raise LlamabenchError(
                f"{where}model {self.model_id}'s generation_config.json sets {', '.join(self.refused)}, which makes "
                "transformers' generate search or return other than one sequence per request chosen from its own "
                "logits; llamabench generates one greedy or seeded sequence per request, so remove the field from "
                "the checkpoint's generation_config.json"
            )

    def processors(
        self, prompt_length: int, max_new: int, eos_tokens: Sequence[int], device: torch.device
    ) -> LogitsProcessorList | None:
        """The honoured settings' processors for one request alone, in ``generate``'s order; None when none
        apply. Each is given the request's own tokens (prompt and generated, no padding)."""
        if not self.settings:
            return None
        s, eos = self.settings, torch.tensor(list(eos_tokens), device=device)
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


def _plain(value):
    """A setting as JSON can hold it (sequence_bias has tuple keys)."""
    if isinstance(value, dict):
        return sorted([list(key) if isinstance(key, tuple) else key, bias] for key, bias in value.items())
    return list(value) if isinstance(value, tuple) else value
