"""Load a resolved model (see ``model_source.py``) and its tokenizer with transformers, on one device or spread
over the visible GPUs by accelerate; GGUF files go through their dense copy (see ``gguf.py``)."""

from __future__ import annotations

import torch

from llamabench.backends.loading.gguf import dense_copy
from llamabench.backends.loading.model_source import ModelSource, PinnedFiles, pin
from llamabench.config import DEVICE_MAPS
from llamabench.errors import LlamabenchError, first_line, network_advice


def check_device_map(device_map: str | None, device: str | None) -> None:
    """Refuse an unknown ``device_map`` and a ``device`` that contradicts it (the map picks the devices)."""
    if device_map is None:
        return
    if device_map not in DEVICE_MAPS:
        raise LlamabenchError(f"--device-map {device_map} is not one of {', '.join(DEVICE_MAPS)}")
    if device not in (None, "cuda"):
        raise LlamabenchError(
            f"--device {device} conflicts with --device-map {device_map}, which places the model on every visible "
            "GPU (the CPU when there is none); drop --device, and choose GPUs with CUDA_VISIBLE_DEVICES"
        )


def checkpoint_location(source: ModelSource, pinned: PinnedFiles | None = None) -> str:
    """The folder (or hub id) an engine loads ``source`` from: a GGUF's dense copy, written first if missing and
    named by the GGUF's bytes (``pinned``, hashed here when not given), else the source's own location."""
    if not source.gguf_file:
        return source.location
    pinned = pinned or pin(source)
    return str(dense_copy(source, pinned.fingerprint, verify=lambda: pinned.check("converted")))


def load_model_and_tokenizer(
    source: ModelSource,
    *,
    dtype,
    device: str,
    trust_remote_code: bool = False,
    device_map: str | None = None,
    pinned: PinnedFiles | None = None,
):
    """Load model (eval mode) and tokenizer; GGUF files go through a dense on-disk cache named by the GGUF's
    fingerprint. The model goes on ``device``, or with ``device_map`` (one of :data:`DEVICE_MAPS`) accelerate
    spreads it over the visible GPUs. With ``pinned`` (the source's files as hashed), files that changed while
    they were read are refused (:meth:`PinnedFiles.check`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf_kwargs = checkpoint_location(source, pinned), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **gguf_kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, **gguf_kwargs
        )
    except (OSError, ValueError, RuntimeError) as exc:
        reason = first_line(exc, limit=1000) or type(exc).__name__
        if not source.is_local:
            raise LlamabenchError(
                f"model {source.name} could not be loaded from the hub ({reason}); {network_advice()}"
            ) from exc
        raise LlamabenchError(
            f"model {source.name} could not be loaded from {location}: {reason}; "
            "check the path is a complete checkpoint (offline users: hub ids need a local copy)"
        ) from exc
    _detach_from_files(model)
    if pinned is not None and not source.gguf_file:  # a GGUF was checked as its dense copy was written
        pinned.check("loaded")
    return (model if device_map else model.to(device)).eval(), tokenizer


def _detach_from_files(model: torch.nn.Module) -> None:
    """Copy into memory the weights transformers left mapped from their files (safetensors on the CPU in the
    dtype saved): a trainer rewriting a file in place would otherwise change the weights in mid-evaluation,
    after every check of the files. Weights on a GPU are copies already."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()
