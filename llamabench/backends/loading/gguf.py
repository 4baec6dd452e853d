"""GGUF checkpoints: dequantised once into a dense safetensors folder in the cache, which loads ~15x faster."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from llamabench.backends.loading.cache_dir import cache_root
from llamabench.backends.loading.model_source import ModelSource
from llamabench.backends.loading.stale import remove_stale_temporaries
from llamabench.errors import LlamabenchError


def dense_copy(source: ModelSource, gguf_fingerprint: str, verify: Callable[[], None] = lambda: None) -> Path:
    """The dense folder of the GGUF ``source`` (whose bytes hash to ``gguf_fingerprint``), written if missing;
    ``verify`` raises when the GGUF changed since it was hashed, before a copy is stored under that name."""
    dense_dir = dense_copy_dir(gguf_fingerprint)
    remove_stale_temporaries(dense_dir.parent)
    if not (dense_dir / "config.json").is_file():
        write_dense_copy(source, dense_dir, verify)
    return dense_dir


def dense_copy_dir(gguf_fingerprint: str) -> Path:
    """Where a GGUF's dense copy lives: named by the GGUF's bytes and the transformers version that converts it."""
    import transformers

    return cache_root() / "dense" / f"{gguf_fingerprint}-transformers{transformers.__version__}"


def write_dense_copy(source: ModelSource, dense_dir: Path, verify: Callable[[], None] = lambda: None) -> None:
    """Dequantise a GGUF checkpoint once and save it as a dense directory (atomic rename), if ``verify`` (called
    once the GGUF is read) does not raise.

    The GGUF is read from a folder holding nothing else: transformers would also read a ``tokenizer.json`` or
    ``generation_config.json`` lying beside it, which the GGUF's fingerprint does not cover."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with tempfile.TemporaryDirectory(prefix="gguf-alone-") as alone:
            os.symlink(Path(source.location).resolve() / source.gguf_file, Path(alone) / source.gguf_file)
            tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=source.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=source.gguf_file)
    except Exception as exc:  # gguf parsing raises many types on corrupt files
        if "architecture" in str(exc) and "not supported" in str(exc):
            raise LlamabenchError(
                f"GGUF file {Path(source.location) / source.gguf_file} is intact, but transformers' GGUF loader "
                f"cannot dequantise it ({str(exc).strip().rstrip('.')}); convert it to a Hugging Face folder"
            ) from exc
        raise LlamabenchError(
            f"GGUF file {Path(source.location) / source.gguf_file} could not be read ({type(exc).__name__}); "
            "the file may be truncated or corrupt: download it again"
        ) from exc
    verify()  # the copy is named by the bytes hashed before the read: they must be the bytes read
    # transformers refuses to save a model it believes is quantised; the weights are already dense here.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    tmp = dense_dir.with_name(dense_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    dense_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dense_dir)
    except OSError:
        if not (dense_dir / "config.json").is_file():
            raise
        shutil.rmtree(tmp)  # another process (a data-parallel rank) finished the same copy first
