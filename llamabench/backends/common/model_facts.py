"""What an engine reads off a model and its tokenizer: dtypes, the context it was trained for, the
tokenizer's identity, logit post-processing it cannot apply, and text no tokenizer encodes."""

from __future__ import annotations

import hashlib
import json

import torch

from llamabench.errors import LlamabenchError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype(device: str) -> str:
    """bfloat16 on a GPU that computes it natively (Ampere on), float16 on an older one, where bf16 would only
    be emulated (slowly); float32 on a CPU, whose bf16 matmuls are no faster and lose precision."""
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def resolve_dtype(dtype: str | None, device: str) -> str:
    """``--dtype``, or the device's default (:func:`default_dtype`); one line naming the flag if it is unknown."""
    dtype = dtype or default_dtype(device)
    if dtype not in DTYPES:
        raise LlamabenchError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}")
    return dtype


def require_text(text: str, what: str) -> None:
    """Refuse a lone surrogate (from JSON escapes such as ``\\ud800``): no tokenizer encodes it, and the error
    would otherwise come from deep inside one, or late, when the text is written, as if the disk had failed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LlamabenchError(
            f"a generation {what} holds a lone surrogate (U+{ord(text[exc.start]):04X}, character {exc.start}), "
            "which is not text; fix the data or task it came from"
        ) from None


# Config attributes through which a model's ``forward`` reshapes its logits (Granite divides them, Cohere
# multiplies them, Gemma 2 soft-caps them), with each one's no-op value. Scoring runs the base model and the
# head directly, so such a model would score other numbers than it generates with.
_LOGIT_POSTPROCESSING = {"logits_scaling": 1.0, "logit_scale": 1.0, "final_logit_softcapping": None}


def refuse_logit_postprocessing(model, model_id: str) -> None:
    for attr, neutral in _LOGIT_POSTPROCESSING.items():
        value = getattr(model.config, attr, None)
        if value is not None and value != neutral:
            raise LlamabenchError(
                f"model {model_id} post-processes its logits ({attr}={value}), which llamabench's scoring does not "
                "apply; it evaluates LLaMA-family models, whose logits are the head's output"
            )


def tokenizer_hash(tokenizer) -> str:
    """A hash of everything that maps text to token ids (vocabulary, merges, normaliser, added tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spelled = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(spelled.encode()).hexdigest()[:16]


# Config keys naming the positions a model was trained for, in the order they are read.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def trained_positions(model) -> int | None:
    """The positions the model's config says it handles (rope scaling included), if it says."""
    for attr in POSITION_KEYS:
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    return None


def model_max_length(model, tokenizer) -> int:
    trained = trained_positions(model)
    if trained is not None:
        return trained
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**9 else 2048


def effective_max_length(model, tokenizer, max_length: int | None, model_id: str) -> int:
    """The window a run uses: ``--max-length`` (range-checked by ``RunConfig.validate``) or the model's own, and
    never more positions than the model was trained for."""
    effective = max_length or model_max_length(model, tokenizer)
    trained = trained_positions(model)
    if trained is not None and effective > trained:
        raise LlamabenchError(
            f"--max-length {effective} exceeds the {trained} positions model {model_id} was trained for "
            "(its max_position_embeddings); scores past them are extrapolation, so lower --max-length"
        )
    return effective


def require_tokens_in_vocabulary(model, tokenizer, model_id: str) -> None:
    """Refuse a tokenizer that can give ids past the model's embedding rows (an ``added_tokens.json`` or a special
    token the model was never given a row for): any text holding such a token would fail deep inside the model,
    so the pair is refused before any request runs."""
    rows = model.get_input_embeddings().num_embeddings
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")}
    past = {name: token for name, token in special.items() if token is not None and token >= rows}
    if len(tokenizer) > rows:
        past["largest"] = len(tokenizer) - 1
    if past:
        named = ", ".join(f"{name} token id {token}" for name, token in past.items())
        raise LlamabenchError(
            f"model {model_id}: its tokenizer gives ids past the model's {rows}-row vocabulary ({named}); the "
            "checkpoint's tokenizer files (added_tokens.json, special_tokens_map.json, tokenizer.json) do not "
            "belong to its weights: fix them or resize the embeddings"
        )
