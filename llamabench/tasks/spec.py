"""Task records: a :class:`TaskSpec` (parsed from a task file by ``tasks/task_file.py``), its data source and its
generation settings. The kind a task names is looked up with :func:`llamabench.tasks.kinds.kind_of`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DatasetSource:
    """Where documents come from: ``local`` (relative to the data dir) and/or a hub dataset, or ``shipped``: a file
    of the samples that ship inside llamabench (``builtin_tasks/samples/``), read whatever the data dir."""

    local: str | None = None
    format: str | None = None
    hub_path: str | None = None
    hub_name: str | None = None
    hub_split: str = "test"
    separator: str | None = None
    shipped: str | None = None

    @property
    def local_format(self) -> str:
        if self.format:
            return self.format
        return "jsonl" if (self.local or self.shipped or "").endswith(".jsonl") else "json"


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
    # The task whose shipped sample this task's aliases run when no data folder is given (``ppl`` is
    # ``wikitext2-sample`` then); the task's own name always means its own data. Changes no number.
    sample: str | None = None

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes the numbers (not the name, aliases or description)."""
        config = {k: v for k, v in asdict(self).items() if k not in {"name", "aliases", "description", "sample"}}
        # Settings added later count only when set, so tasks that leave them alone keep their stored hashes.
        if config["word_rule"] == TaskSpec.word_rule:
            del config["word_rule"]
        for key in ("separator", "shipped"):
            if config["dataset"][key] is None:
                del config["dataset"][key]
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
