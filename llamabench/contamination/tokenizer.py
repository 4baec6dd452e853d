"""The model's tokenizer alone (no weights), as a ``tokenizers.Tokenizer`` that worker processes rebuild from JSON.

A GGUF checkpoint's tokenizer comes from its dense copy when one exists (written by an earlier run: loads in
milliseconds), else from the GGUF file itself (seconds); a model folder's or hub id's through transformers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llamabench.backends.loading.gguf import dense_copy_dir
from llamabench.backends.loading.model_source import fingerprint, resolve_model
from llamabench.errors import LlamabenchError, first_line


@dataclass(frozen=True)
class ScanTokenizer:
    """A model's tokenizer: the model's name, the tokenizer's JSON and a hash of it (recorded in the manifest)."""

    model: str
    json: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()[:16]

    def load(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.json)


def load_tokenizer(model: str | None) -> ScanTokenizer:
    """The tokenizer of ``--model`` (None: the embedded default); a model without a fast tokenizer is refused."""
    source = resolve_model(model)
    if source.gguf_file:
        dense = dense_copy_dir(fingerprint(source)) / "tokenizer.json"
        if dense.is_file():
            return ScanTokenizer(source.name, dense.read_text(encoding="utf-8"))
    from transformers import AutoTokenizer

    try:
        if source.gguf_file:
            with tempfile.TemporaryDirectory(prefix="gguf-alone-") as alone:  # nothing beside it is read
                os.symlink(Path(source.location).resolve() / source.gguf_file, Path(alone) / source.gguf_file)
                tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=source.gguf_file)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source.location)
    except (OSError, ValueError) as exc:
        raise LlamabenchError(
            f"the tokenizer of model {source.name} could not be loaded ({first_line(exc, 200)}); "
            "pass --model a local model folder or .gguf file"
        ) from exc
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LlamabenchError(f"model {source.name} has no fast (tokenizers) tokenizer; convert its tokenizer first")
    return ScanTokenizer(source.name, backend.to_str())
