"""Task records: a :class:`TaskSpec` (parsed from a task file by ``tasks/task_file.py``), its data source and its
generation settings. The kind a task names is looked up with :func:`llamabench.tasks.kinds.kind_of`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DatasetSource:
    """Where documents come from: ``local`` (relative to the data dir) and/or a hub dataset."""

    local: str | None = None
    format: str | None = None
    hub_path: str | None = None
    hub_name: str | None = None
    hub_split: str = "test"
    separator: str | None = None

    @property
    def local_format(self) -> str:
        if self.format:
            return self.format
        return "jsonl" if (self.local or "").endswith(".jsonl") else "json"


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    until: tuple[str, ...] = ("\n",)
    greedy: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task: data source, prompt templates, request kind, metrics and settings."""

    name: str
    kind: str
    dataset: DatasetSource
    prompt: str
    metrics: tuple[str, ...]
    version: str = "1"
    description: str = ""
    aliases: tuple[str, ...] = ()
    doc_id: str | None = None
    units: str | None = None
    target: str | list[str] | None = None
    choices: str | list[str] | None = None
    label: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    num_fewshot: int = 0
    fewshot_delimiter: str = "\n\n"
    target_delimiter: str = " "
    stride: int | None = None
    chat_template: bool = False
    word_rule: str = "lm_eval"

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes the numbers (not the name, aliases or description)."""
        config = {k: v for k, v in asdict(self).items() if k not in {"name", "aliases", "description"}}
        # Settings added later count only when set, so tasks that leave them alone keep their stored hashes.
        if config["word_rule"] == TaskSpec.word_rule:
            del config["word_rule"]
        if config["dataset"]["separator"] is None:
            del config["dataset"]["separator"]
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
