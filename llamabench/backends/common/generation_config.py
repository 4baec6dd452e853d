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

from transformers import GenerationConfig

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


def _plain(value):
    """A setting as JSON can hold it (sequence_bias has tuple keys)."""
    if isinstance(value, dict):
        return sorted([list(key) if isinstance(key, tuple) else key, bias] for key, bias in value.items())
    return list(value) if isinstance(value, tuple) else value
