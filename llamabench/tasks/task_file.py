"""Task files: one YAML file per task, read with bounds, checked against a typed schema and each kind's keys, and
parsed into a :class:`~llamabench.tasks.spec.TaskSpec`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llamabench.config import TEXT_FORMATS
from llamabench.errors import LlamabenchError
from llamabench.metrics import METRICS, get_metric
from llamabench.metrics.perplexity import WORD_RULES
from llamabench.tasks.kinds import KINDS, TaskKind
from llamabench.tasks.spec import DatasetSource, GenerationSettings, TaskSpec

# Task names become file names and table keys: no separators, no prefixes such as ``lm_eval:``.
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")


def parse_task(raw: Any, origin: str) -> TaskSpec:
    """Validate a YAML mapping and build the :class:`TaskSpec`; errors name ``origin`` and the bad key."""
    if not isinstance(raw, dict):
        raise LlamabenchError(f"{origin}: a task file must be a YAML mapping of keys to values")
    check_schema(raw, TASK_SCHEMA, origin)
    for key in ("name", "kind", "dataset", "prompt", "metrics"):
        if key not in raw:
            raise LlamabenchError(f"{origin}: missing required key '{key}'")
    kind = raw["kind"]
    _check_kind_keys(raw, KINDS[kind], origin)
    metrics = raw["metrics"]
    if not metrics:
        raise LlamabenchError(f"{origin}: 'metrics' must be a non-empty list of metric names")
    twice = sorted({metric for metric in metrics if metrics.count(metric) > 1})
    if twice:  # a metric listed twice would be two rows of one number, weighing double in any summary
        raise LlamabenchError(f"{origin}: metric(s) {', '.join(twice)} listed twice in 'metrics'; list each once")
    for metric in metrics:
        _check_metric_needs(metric, KINDS[kind], origin)
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


# The keys every task may give, whatever its kind; each kind names the others it takes (``TaskKind.keys``).
COMMON_KEYS = ("name", "kind", "dataset", "prompt", "metrics", "version", "description", "aliases", "doc_id", "sample")


def _check_kind_keys(raw: dict, kind: TaskKind, origin: str) -> None:
    """Refuse a key that means nothing to ``kind`` (it would change the task hash and nothing else), then a
    key the kind needs that is missing."""
    misplaced = sorted(key for key in raw if key not in COMMON_KEYS and key not in kind.keys)
    if misplaced:
        owners = [
            f"'{key}' (for kind {' or '.join(name for name, other in KINDS.items() if key in other.keys)})"
            for key in misplaced
        ]
        raise LlamabenchError(
            f"{origin}: key{'s' if len(owners) > 1 else ''} {', '.join(owners)} "
            f"{'do' if len(owners) > 1 else 'does'} not apply to kind '{kind.name}'; remove "
            f"{'them' if len(owners) > 1 else 'it'} or change the kind (kind '{kind.name}' takes "
            f"{', '.join(kind.keys)} beside the keys every task has)"
        )
    for key in kind.required_keys:
        if raw.get(key) is None:
            raise LlamabenchError(f"{origin}: kind '{kind.name}' needs the key '{key}'")


def _check_metric_needs(metric: str, kind: TaskKind, origin: str) -> None:
    """Refuse a metric that reads outcome fields (``Metric.needs``) the kind's outcomes do not fill."""
    try:
        needs = get_metric(metric).needs
    except LlamabenchError as exc:
        raise LlamabenchError(f"{origin}: {exc}") from None
    missing = [field for field in needs if field not in kind.outcome_fields]
    if missing:
        scored = [name for name, other in KINDS.items() if set(needs) <= set(other.outcome_fields)]
        fitting = sorted(name for name, known in METRICS.items() if set(known.needs) <= set(kind.outcome_fields))
        raise LlamabenchError(
            f"{origin}: metric '{metric}' scores {' or '.join(scored) or 'no'} tasks, not kind '{kind.name}' "
            f"(it needs {', '.join(missing)}, which kind '{kind.name}' does not give); "
            f"metrics for '{kind.name}': {', '.join(fitting)}"
        )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _texts(value: Any) -> bool:
    """A non-empty list of text."""
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


@dataclass(frozen=True)
class _Type:
    """What one key's value must be: ``check`` says whether it is, ``expected`` says it in words."""

    check: Callable[[Any], bool]
    expected: str


TEXT = _Type(_text, "text")
_NAME_RULE = "text of 1 to 100 letters, digits and . _ + - (starting with a letter or digit)"
NAME = _Type(lambda v: _text(v) and bool(_TASK_NAME.match(v)), _NAME_RULE)
NAMES = _Type(lambda v: NAME.check(v) or (isinstance(v, list) and all(map(NAME.check, v))), f"{_NAME_RULE}, or a list")
TEXTS = _Type(lambda v: _text(v) or _texts(v), "text or a non-empty list of text")
TEMPLATES = _Type(TEXTS.check, "a template (text) or a non-empty list of templates")
STOPS = _Type(lambda v: _text(v) or v == [] or _texts(v), "text or a list of text ([] for none)")
FLAG = _Type(lambda v: isinstance(v, bool), "true or false")
TEXT_OR_NUMBER = _Type(lambda v: isinstance(v, str | int | float) and not isinstance(v, bool), "text or a number")


def _whole_from(minimum: int) -> _Type:
    return _Type(lambda v: _whole(v, minimum), f"a whole number >= {minimum}")


# Every key a task file may hold and the type of its value; a nested dict is a mapping of its own keys. A key
# with no value (null) is refused: `until:` left empty might mean "no stop strings" or "the default". Every
# key is checked here, before any other rule reads a value, so a wrong type is one line naming the key
# instead of a crash deep inside.
TASK_SCHEMA: dict[str, Any] = {
    "name": NAME,
    "kind": _Type(lambda v: _text(v) and v in KINDS, f"one of {', '.join(KINDS)}"),
    "dataset": {
        "local": TEXT,
        "format": TEXT,
        "separator": _Type(lambda v: _text(v) and bool(v), "a non-empty string"),
        "hub": {"path": TEXT, "name": TEXT, "split": TEXT},
        "shipped": TEXT,
    },
    "sample": NAME,
    "prompt": TEXT,
    "metrics": _Type(_texts, "a list of metric names (text, at least one)"),
    "version": TEXT_OR_NUMBER,
    "description": TEXT,
    "aliases": NAMES,
    "doc_id": TEXT,
    "units": TEXT,
    "target": TEMPLATES,
    "choices": TEMPLATES,
    "label": TEXT,
    "generation": {"max_new_tokens": _whole_from(1), "until": STOPS, "greedy": FLAG},
    "num_fewshot": _whole_from(0),
    "fewshot_delimiter": TEXT,
    "target_delimiter": TEXT,
    "stride": _whole_from(1),
    "chat_template": FLAG,
    "word_rule": TEXT,
}


def check_schema(raw: dict, schema: dict[str, Any], origin: str, prefix: str = "") -> None:
    """Refuse unknown keys and values of the wrong type anywhere under ``raw``, naming the key as a dotted path
    (``dataset.hub.path``), what it holds and what it must hold; text must be valid Unicode (no lone surrogate)."""
    _reject_unknown(raw, set(schema), f"{origin}: {prefix.rstrip('.')}" if prefix else origin)
    for key, value in raw.items():
        path, expected = prefix + str(key), schema[key]
        if value is None:
            raise LlamabenchError(f"{origin}: {path} has no value (null); give it one or remove the key")
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise _wrong_type(origin, path, "a mapping of keys to values", value)
            check_schema(value, expected, origin, path + ".")
            continue
        if not expected.check(value):
            raise _wrong_type(origin, path, expected.expected, value)
        for text in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if isinstance(text, str) and (bad := _SURROGATE.search(text)):
                raise LlamabenchError(
                    f"{origin}: {path} holds a lone surrogate (U+{ord(bad.group()):04X}), which is not text; "
                    "remove the \\u escape"
                )


def _wrong_type(origin: str, path: str, expected: str, value: Any) -> LlamabenchError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return LlamabenchError(f"{origin}: {path} must be {expected}, not {type(value).__name__} {shown}")


def _whole(value: Any, minimum: int) -> bool:
    """A whole number (not a boolean, which YAML also reads as one) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# A task file is a page of settings: these bounds refuse a huge file or a "billion laughs" document (anchors
# aliasing anchors, a kilobyte that expands to billions of values) before it costs minutes of hashing. Counting
# values is not enough: a few thousand aliases of one long string stay under the value bound yet expand to
# gigabytes of targets, so the text the values hold, every alias expanded, is bounded as well, by what the file
# itself may hold.
MAX_TASK_FILE_BYTES = 1 << 20
MAX_TASK_NODES = 100_000
MAX_TASK_CHARS = MAX_TASK_FILE_BYTES


class _TooLarge(Exception):
    """Raised by :class:`_BoundedLoader` when aliases expand a document past one of the bounds (the message)."""


class _DuplicateKey(Exception):
    """Raised by :class:`_BoundedLoader` for a mapping that gives one key twice (the message: key and line)."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a document whose values, with every alias expanded, exceed ``MAX_TASK_NODES``
    values or ``MAX_TASK_CHARS`` characters of text, and a mapping that gives one key twice (PyYAML would keep the
    last silently: two `prompt:` lines would score with whichever came second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Keys a merge (<<: *base) brings in may be overridden: only a key written twice is ambiguous.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise _DuplicateKey(f"key '{key_node.value}' given twice (line {key_node.start_mark.line + 1})")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            nodes, chars = _expanded_size(node, {})
            if nodes > MAX_TASK_NODES:
                raise _TooLarge(f"more than {MAX_TASK_NODES} values")
            if chars > MAX_TASK_CHARS:
                raise _TooLarge(f"more than {MAX_TASK_CHARS} characters of text")
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Values and characters of text under ``node``, counting each alias as a full copy; ``sizes`` memoises
    shared (anchored) nodes, so this costs time linear in the file, not in the expansion."""
    if id(node) not in sizes:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        total = 1
        chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        for child in children:
            child_nodes, child_chars = _expanded_size(child, sizes)
            total, chars = total + child_nodes, chars + child_chars
            if total > MAX_TASK_NODES or chars > MAX_TASK_CHARS:
                break  # past a bound: the exact size does not matter
        sizes[id(node)] = (total, chars)
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
    except _DuplicateKey as exc:
        raise LlamabenchError(f"task file {path}: {exc}; keep one") from None
    except _TooLarge as exc:
        raise LlamabenchError(
            f"task file {path}: its YAML aliases expand to {exc}; write the values out instead of repeating "
            "anchors (*alias)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LlamabenchError(f"task file {path} is not valid YAML{where}; fix its syntax") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LlamabenchError(f"task file {path} cannot be read ({exc}); check the path and encoding") from exc
    return parse_task(raw, str(path))


def names_in_task_file(path: Path) -> set[str]:
    """The ``name`` and ``aliases`` a task file gives, as far as they can be read at all; nothing when they cannot
    (used to tell which tasks an unreadable file might define). Never raises."""
    try:
        if path.stat().st_size > MAX_TASK_FILE_BYTES:
            return set()
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_BoundedLoader)
    except Exception:  # noqa: BLE001  (a file that cannot be read at all defines no name we can know)
        return set()
    if not isinstance(raw, dict):
        return set()
    names = [raw.get("name"), *_as_list(raw.get("aliases"))]
    return {name for name in names if isinstance(name, str)}


def _parse_dataset(raw: dict, origin: str) -> DatasetSource:
    """The ``dataset`` mapping, its types already checked by :func:`check_schema`."""
    hub = raw.get("hub", {})
    if not raw.get("local") and not hub.get("path") and not raw.get("shipped"):
        raise LlamabenchError(f"{origin}: 'dataset' needs a 'local' file or a 'hub' path")
    if raw.get("shipped") and (raw.get("local") or hub):
        raise LlamabenchError(
            f"{origin}: dataset.shipped names a sample shipped with llamabench, which is the task's only data; "
            "drop 'local' and 'hub', or make them a task of their own"
        )
    source = DatasetSource(
        local=normal_path(raw.get("local")),
        format=raw.get("format"),
        hub_path=hub.get("path"),
        hub_name=hub.get("name"),
        hub_split=hub.get("split", "test"),
        separator=raw.get("separator"),
        shipped=normal_path(raw.get("shipped")),
    )
    from llamabench.tasks.data import READERS

    formats = (*READERS, *TEXT_FORMATS)
    if source.local and source.local_format not in formats:
        raise LlamabenchError(f"{origin}: dataset format '{source.format}' is not one of {', '.join(formats)}")
    if source.shipped and source.local_format not in READERS:
        raise LlamabenchError(f"{origin}: a shipped sample's format must be one of {', '.join(READERS)}")
    separator = source.separator
    if separator is not None and (source.format != "paragraphs" or not separator):
        raise LlamabenchError(
            f"{origin}: dataset.separator must be a non-empty string, with format: paragraphs "
            "(omit it to split paragraphs at blank lines)"
        )
    return source


def normal_path(path: str | None) -> str | None:
    """``path`` spelled one way: ``books``, ``books/``, ``./books`` and ``books//`` name one folder, so they give
    one task hash (the path is part of it). Lexical only: whether and where the path exists is read later."""
    return os.path.normpath(path) if path else path


def _parse_generation(raw: dict, origin: str) -> GenerationSettings:
    """The ``generation`` mapping, its types already checked by :func:`check_schema`."""
    until = raw.get("until", list(GenerationSettings.until))
    until = [until] if isinstance(until, str) else until
    if not all(until):
        raise LlamabenchError(f"{origin}: generation.until must be a list of non-empty stop strings (or [] for none)")
    return GenerationSettings(
        max_new_tokens=raw.get("max_new_tokens", GenerationSettings.max_new_tokens),
        until=tuple(until),
        greedy=raw.get("greedy", True),
    )


def _reject_unknown(raw: dict, known: set[str], origin: str) -> None:
    unknown = sorted(str(key) for key in set(raw) - known)  # YAML keys may be numbers, null or lists
    if unknown:
        raise LlamabenchError(
            f"{origin}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(sorted(known))}"
        )
