"""Which checkpoints to evaluate: ``--model`` values and globs, and the finished checkpoints of a training folder."""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llamabench.analysis.report import checkpoint_step
from llamabench.backends.loading.model_source import resolve_model
from llamabench.errors import LlamabenchError, note
from llamabench.urls import is_server_url, shown

_GLOB_CHARS = set("*?[")
# Files whose presence means a checkpoint folder holds its weights (a shard index names the rest).
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")
# A name part that marks a folder still being written under a temporary name and renamed when complete
# (``tmp-checkpoint-500`` from the Trainer, ``checkpoint-500.tmp``, ``step500.partial``): never a checkpoint.
_TEMPORARY_NAME = re.compile(r"(?:^|[._-])(?:tmp|temp|partial|incomplete)(?:$|[._-]|\d)", re.IGNORECASE)


def expand_models(values: list[str]) -> list[str | None]:
    """``--model`` values in order, each glob replaced by its matches (by training step, then name); a value that
    names an existing path is taken as it is, even with ``[`` or ``*`` in it. Those after the first are resolved
    now, so a typo in the last fails before the first loads (the first is resolved as it loads, after the device
    and dtype are checked). One checkpoint named several ways (``ckpt``, ``./ckpt/``, its absolute path, a
    symlink to it) is evaluated once, under the first name. No value: the default model."""
    if not values:
        return [None]
    models: list[str] = []
    for value in values:
        if _GLOB_CHARS & set(value) and not os.path.lexists(os.path.expanduser(value)):
            matches = glob.glob(os.path.expanduser(value))
            if not matches:
                raise LlamabenchError(f"--model {shown(value)} matches no file or folder; check the pattern")
            models += sorted(matches, key=lambda path: (checkpoint_step(Path(path).name) or 0, path))
        else:
            models.append(value)
    return _once_each(models)


def _once_each(models: list[str]) -> list[str]:
    """``models`` without the later names of a checkpoint named before (same resolved folder and file), with one
    note naming them; a model after the first that does not resolve is refused here."""
    kept: dict[object, str] = {}
    dropped: list[str] = []
    for index, model in enumerate(models):
        if is_server_url(model):  # a server: its URL is its identity
            identity: object = model
        else:
            try:
                source = resolve_model(model)
                identity = (source.location, source.gguf_file)
            except LlamabenchError:
                if index:
                    raise
                identity = model  # the first value is refused where it loads, after the device checks
        if identity in kept:
            dropped.append(model)
        else:
            kept[identity] = model
    if dropped:
        note(f"--model {', '.join(map(shown, dropped))}: the same checkpoint as an earlier --model, evaluated once")
    return list(kept.values())


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder under a watched folder and its training step."""

    path: Path
    step: int


def step_folders(root: Path) -> list[Checkpoint]:
    """The sub-folders of ``root`` whose names carry a training step (``checkpoint-1000``, ``step2000``), by step;
    hidden folders and temporary names (a save in progress) left out. A root deleted under the listing: none."""
    found = []
    try:
        paths = list(root.iterdir())
    except OSError:
        return []
    for path in paths:
        if path.name.startswith(".") or _TEMPORARY_NAME.search(path.name) or not path.is_dir():
            continue
        step = checkpoint_step(path.name)
        if step is not None:
            found.append(Checkpoint(path, step))
    return sorted(found, key=lambda c: (c.step, c.path.name))


def snapshot(folder: Path) -> tuple | None:
    """What the folder's files are now (names, sizes, modification times), or None while it has no weights yet.
    A checkpoint is complete once it has weights and its snapshot is the same at two polls."""
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    except OSError:  # the folder, or a sub-folder, deleted or renamed under the listing
        return None
    if not any(p.match(pattern) for p in files for pattern in _WEIGHTS) or _missing_shards(folder):
        return None
    try:
        return tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except FileNotFoundError:  # a file renamed away between listing and stat: still being written
        return None


def _missing_shards(folder: Path) -> bool:
    """Whether a shard index (``*.index.json``) of the folder names a weight file that is not there yet."""
    for index in folder.glob("*.index.json"):
        try:
            named = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):  # an index still being written
            return True
        if any(not (folder / name).is_file() for name in named):
            return True
    return False
