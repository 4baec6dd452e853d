"""Content fingerprints of in-memory models, which have no files: a hash of everything that changes their numbers.

Hashed: the config (``config.json`` as transformers writes it) and generation config, the tokenizer (its
:func:`~llamabench.backends.hf.backend.tokenizer_hash`), and every parameter and buffer by name, dtype, shape and bytes.
A model sharded with FSDP2 hashes each rank's shards, and the ranks combine their digests, so every rank gets the
same fingerprint; it differs from the same weights unsharded (the cache then recomputes, never mixes them up).
The ``memory:`` prefix keeps these apart from file fingerprints. blake3 runs at several GB/s on one core, so
this is cheap enough for every evaluation (SmolLM2-135M: see ``bench/RESULTS.md``).
"""

from __future__ import annotations

import json

import blake3
import torch
from torch.distributed.tensor import DTensor

from llamabench.backends.loading.fingerprint import FINGERPRINT_HEX
from llamabench.distributed import every_rank

MEMORY_PREFIX = "memory:"


def fingerprint_model(model: torch.nn.Module, tokenizer, *, sharded: bool = False) -> str:
    """The fingerprint of ``model`` (a transformers model, unwrapped) with ``tokenizer``; ``sharded``: FSDP2."""
    from llamabench.backends.common.model_facts import tokenizer_hash

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)  # large tensors hash on every core
    for part in (_config_text(model), tokenizer_hash(tokenizer)):
        hasher.update(part.encode() + b"\0")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        hasher.update(_bytes(local))
    digest = hasher.hexdigest()
    if sharded:
        digest = blake3.blake3("|".join(every_rank(digest)).encode()).hexdigest()
    return MEMORY_PREFIX + digest[:FINGERPRINT_HEX]


# Config keys that change no number (where the model came from, the code version that wrote it, the class name)
# or that each tensor's own dtype already says: left out, so a model and its saved-and-reloaded copy agree.
_NOT_NUMBERS = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


def _config_text(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    generation = getattr(model, "generation_config", None)
    parts = [type(model).__qualname__]
    for settings in (config, generation):
        if settings is not None:
            values = {k: v for k, v in settings.to_dict().items() if k not in _NOT_NUMBERS}
            parts.append(json.dumps(values, sort_keys=True, default=str))
    return "\n".join(parts)


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    return memoryview(flat.contiguous().view(torch.uint8).numpy())
