"""What a run asks of a checkpoint, checked against the checkpoint's small files before its weights load: a task
that wants the chat template of a model without one, generation that leaves no room for a prompt in the model's
context, and generation settings no engine path honours (see checkpoint_generation). GGUF files and hub models
are checked once loaded instead (their settings are not in small files here); the run then still fails before
any request is computed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import GenerationConfig

from llamabench.backends.common.generation_config import CheckpointGeneration
from llamabench.backends.common.model_facts import POSITION_KEYS
from llamabench.backends.loading.model_source import resolve_model
from llamabench.errors import LlamabenchError
from llamabench.tasks.kinds import kind_of

if TYPE_CHECKING:
    from llamabench.native import PreparedTask

# Where transformers finds a tokenizer's chat template, besides tokenizer_config.json's "chat_template".
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def check_before_loading(model: str | None, tasks: Sequence[PreparedTask], max_length: int | None) -> None:
    """Refuse, with one line naming the task, the model and the fix, what ``tasks`` ask of ``model`` that it
    cannot give; ``max_length`` is ``--max-length`` (None: the model's own context)."""
    try:
        source = resolve_model(model)
    except LlamabenchError:
        return  # loading names the bad --model, after the flags it checks first (--device, --dtype)
    if source.gguf_file or not source.is_local:
        return
    folder = Path(source.location)
    context = None if max_length is not None else _trained_positions(folder)  # --max-length: checked already
    for task in tasks:
        name, kind = task.spec.name, kind_of(task.spec)
        if context is not None:
            kind.check_fits(name, task.requests, context, model=source.name)
        if task.spec.chat_template and not has_chat_template(folder):
            raise LlamabenchError(
                f"task {name} asks for the chat template (chat_template: true), but model {source.name} has none "
                f"(no chat_template in its tokenizer_config.json, no {' or '.join(_TEMPLATE_FILES)}); set "
                "chat_template: false in the task or evaluate a chat model"
            )
        if kind.generates and (folder / "generation_config.json").is_file():
            try:
                config = GenerationConfig.from_pretrained(folder)
            except (OSError, ValueError):
                continue  # a broken file: loading reports it
            CheckpointGeneration(config, source.name).require(name)


def has_chat_template(folder: Path) -> bool:
    """Whether the tokenizer saved in ``folder`` carries a chat template (as transformers looks for one)."""
    if any((folder / name).is_file() for name in _TEMPLATE_FILES):
        return True
    if (folder / "additional_chat_templates").is_dir():
        return True
    config = _json(folder / "tokenizer_config.json")
    return bool(config.get("chat_template"))


def _trained_positions(folder: Path) -> int | None:
    config = _json(folder / "config.json")
    config = {**config.get("text_config", {}), **config}  # multimodal checkpoints nest the language model's
    return next((int(config[key]) for key in POSITION_KEYS if config.get(key)), None)


def _json(path: Path) -> dict:
    """A JSON object file, or {} when it is missing or not an object (the loader reports a broken file)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
