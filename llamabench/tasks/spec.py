"""Task definitions: one YAML file per task, parsed and validated into a :class:`TaskSpec`."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS, get_metric
from llamabench.metrics.perplexity import WORD_RULES
from llamabench.tasks.kinds import KINDS, TaskKind
from llamabench.tasks.text_readers import TEXT_FORMATS


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
    def task_kind(self) -> TaskKind:
        """The kind named by ``kind``: how this task's requests are built, run and scored."""
        return KINDS[self.kind]

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


_TOP_KEYS = {f.name for f in fields(TaskSpec)}
# Task names become file names and table keys: no separators, no prefixes such as ``lm_eval:``.
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
_DATASET_KEYS = {"local", "format", "hub", "separator"}
_HUB_KEYS = {"path", "name", "split"}
_GENERATION_KEYS = {f.name for f in fields(GenerationSettings)}


def parse_task(raw: Any, origin: str) -> TaskSpec:
    """Validate a YAML mapping and build the :class:`TaskSpec`; errors name ``origin`` and the bad key."""
    if not isinstance(raw, dict):
        raise LlamabenchError(f"{origin}: a task file must be a YAML mapping of keys to values")
    _reject_unknown(raw, _TOP_KEYS, origin)
    for key in ("name", "kind", "dataset", "prompt", "metrics"):
        if key not in raw:
            raise LlamabenchError(f"{origin}: missing required key '{key}'")
    for key, value in [("name", raw["name"])] + [("aliases", alias) for alias in _as_list(raw.get("aliases"))]:
        if not isinstance(value, str) or not _TASK_NAME.match(value):
            raise LlamabenchError(
                f"{origin}: {key} {value!r} must be text of 1 to 100 letters, digits and . _ + - "
                "(starting with a letter or digit)"
            )
    kind = raw["kind"]
    if not isinstance(kind, str) or kind not in KINDS:  # a YAML list or mapping cannot key the registry
        raise LlamabenchError(f"{origin}: kind '{kind}' is not one of {', '.join(KINDS)}")
    for key in KINDS[kind].required_keys:
        if raw.get(key) is None:
            raise LlamabenchError(f"{origin}: kind '{kind}' needs the key '{key}'")
    metrics = raw["metrics"]
    if isinstance(metrics, str) or not metrics:
        raise LlamabenchError(f"{origin}: 'metrics' must be a non-empty list of metric names")
    for metric in metrics:
        try:
            kinds = get_metric(metric).kinds
        except LlamabenchError as exc:
            raise LlamabenchError(f"{origin}: {exc}") from None
        if kind not in kinds:
            fitting = sorted(name for name, known in METRICS.items() if kind in known.kinds)
            raise LlamabenchError(
                f"{origin}: metric '{metric}' scores {' or '.join(kinds)} tasks, not kind '{kind}'; "
                f"metrics for '{kind}': {', '.join(fitting)}"
            )
    _check_types(raw, origin)
    if not _whole(raw.get("num_fewshot", 0), 0):
        raise LlamabenchError(f"{origin}: 'num_fewshot' must be a whole number >= 0")
    if raw.get("stride") is not None and not _whole(raw["stride"], 1):
        raise LlamabenchError(f"{origin}: 'stride' must be a positive whole number of tokens")
    if raw.get("word_rule", TaskSpec.word_rule) not in WORD_RULES:
        raise LlamabenchError(f"{origin}: 'word_rule' must be one of {', '.join(WORD_RULES)}")
    dataset = _parse_dataset(raw["dataset"], origin)
    values = {k: v for k, v in raw.items() if k not in {"dataset", "generation", "metrics", "aliases", "version"}}
    if dataset.local and dataset.local_format in TEXT_FORMATS:
        if not KINDS[kind].takes_text_files:
            fitting = " or ".join(name for name, known in KINDS.items() if known.takes_text_files)
            raise LlamabenchError(
                f"{origin}: dataset.format '{dataset.format}' is for kind {fitting} only; "
                f"use jsonl or json for a task of kind '{kind}'"
            )
        values.setdefault("doc_id", "{{ doc_id }}")  # the source file (and line or paragraph) of each document
    return TaskSpec(
        **values,
        dataset=dataset,
        generation=_parse_generation(raw.get("generation") or {}, origin),
        metrics=tuple(metrics),
        aliases=tuple(_as_list(raw.get("aliases"))),
        version=str(raw.get("version", "1")),
    )


# The type each text-or-flag key must have: YAML would happily give a task `greedy: "false"` (a true string)
# or `prompt: 12`, which must not be read as something else.
_TEXT_KEYS = ("prompt", "units", "doc_id", "label", "description", "fewshot_delimiter", "target_delimiter")
_LIST_KEYS = ("target", "choices")


def _check_types(raw: dict, origin: str) -> None:
    for key in _TEXT_KEYS:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise LlamabenchError(f"{origin}: '{key}' must be text (a template), not {type(raw[key]).__name__}")
    for key in _LIST_KEYS:
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) or _texts(value)):
            raise LlamabenchError(f"{origin}: '{key}' must be a template or a list of templates")
    if not isinstance(raw.get("chat_template", False), bool):
        raise LlamabenchError(f"{origin}: 'chat_template' must be true or false")
    if isinstance(raw.get("version"), bool) or not isinstance(raw.get("version", "1"), str | int):
        raise LlamabenchError(f"{origin}: 'version' must be text or a number")


def _whole(value: Any, minimum: int) -> bool:
    """A whole number (not a boolean, which YAML also reads as one) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _texts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# A task file is a page of settings: these bounds refuse a huge file or a "billion laughs" document (anchors
# aliasing anchors, a kilobyte that expands to billions of values) before it costs minutes of hashing.
MAX_TASK_FILE_BYTES = 1 << 20
MAX_TASK_NODES = 100_000


class _TooManyNodes(Exception):
    """Raised by :class:`_BoundedLoader` when aliases expand a document past ``MAX_TASK_NODES`` values."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a document whose values, with every alias expanded, exceed ``MAX_TASK_NODES``."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_TASK_NODES:
            raise _TooManyNodes
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under ``node`` counting each alias as a full copy; ``sizes`` memoises shared (anchored) nodes, so
    this costs time linear in the file, not in the expansion."""
    if id(node) not in sizes:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        total = 1
        for child in children:
            total += _expanded_size(child, sizes)
            if total > MAX_TASK_NODES:
                break  # past the bound: the exact size does not matter
        sizes[id(node)] = total
    return sizes[id(node)]


def load_task_file(path: Path) -> TaskSpec:
    """Read and validate one task YAML file (safe loader: YAML cannot run code; bounded size and expansion)."""
    try:
        size = path.stat().st_size
        if size > MAX_TASK_FILE_BYTES:
            raise LlamabenchError(
                f"task file {path} is {size} bytes, more than the {MAX_TASK_FILE_BYTES} a task file may have; "
                "keep documents in a data file under --data-dir"
            )
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_BoundedLoader)  # a SafeLoader: runs no code
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise LlamabenchError(f"task file {path} nests its values too deeply to read; flatten them") from None
    except _TooManyNodes:
        raise LlamabenchError(
            f"task file {path}: its YAML aliases expand to more than {MAX_TASK_NODES} values; "
            "write the values out instead of repeating anchors (*alias)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LlamabenchError(f"task file {path} is not valid YAML{where}; fix its syntax") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LlamabenchError(f"task file {path} cannot be read ({exc}); check the path and encoding") from exc
    return parse_task(raw, str(path))


def _parse_dataset(raw: Any, origin: str) -> DatasetSource:
    if not isinstance(raw, dict):
        raise LlamabenchError(f"{origin}: 'dataset' must be a mapping with 'local' and/or 'hub'")
    _reject_unknown(raw, _DATASET_KEYS, f"{origin}: dataset")
    hub = raw.get("hub") or {}
    _reject_unknown(hub, _HUB_KEYS, f"{origin}: dataset.hub")
    if not raw.get("local") and not hub.get("path"):
        raise LlamabenchError(f"{origin}: 'dataset' needs a 'local' file or a 'hub' path")
    source = DatasetSource(
        local=raw.get("local"),
        format=raw.get("format"),
        hub_path=hub.get("path"),
        hub_name=hub.get("name"),
        hub_split=hub.get("split", "test"),
        separator=raw.get("separator"),
    )
    from llamabench.tasks.data import READERS

    formats = (*READERS, *TEXT_FORMATS)
    if source.local and source.local_format not in formats:
        raise LlamabenchError(f"{origin}: dataset format '{source.format}' is not one of {', '.join(formats)}")
    separator = source.separator
    if separator is not None and (source.format != "paragraphs" or not isinstance(separator, str) or not separator):
        raise LlamabenchError(
            f"{origin}: dataset.separator must be a non-empty string, with format: paragraphs "
            "(omit it to split paragraphs at blank lines)"
        )
    return source


def _parse_generation(raw: Any, origin: str) -> GenerationSettings:
    if not isinstance(raw, dict):
        raise LlamabenchError(f"{origin}: 'generation' must be a mapping")
    _reject_unknown(raw, _GENERATION_KEYS, f"{origin}: generation")
    until = raw.get("until", list(GenerationSettings.until))
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(stop, str) and stop for stop in until):
        raise LlamabenchError(f"{origin}: generation.until must be a list of non-empty stop strings (or [] for none)")
    if not _whole(raw.get("max_new_tokens", GenerationSettings.max_new_tokens), 1):
        raise LlamabenchError(f"{origin}: generation.max_new_tokens must be a positive whole number")
    if not isinstance(raw.get("greedy", True), bool):
        raise LlamabenchError(f"{origin}: generation.greedy must be true or false")
    return GenerationSettings(
        max_new_tokens=raw.get("max_new_tokens", GenerationSettings.max_new_tokens),
        until=tuple(until),
        greedy=raw.get("greedy", True),
    )


def _reject_unknown(raw: dict, known: set[str], origin: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LlamabenchError(
            f"{origin}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(sorted(known))}"
        )
