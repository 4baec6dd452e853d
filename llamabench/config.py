"""One run's configuration: every run-wide setting in one typed record, validated in one place.

Each field is named as its ``llamabench run`` flag (``--tasks-dir`` is ``tasks_dir``, ``--no-cache`` is
``no_cache``), so the CLI, :func:`~llamabench.pipeline.evaluate_checkpoint`, :func:`~llamabench.training.in_memory.
evaluate_model` and the Trainer callback take the same names. A flag that may be repeated is a list. Two fields
are spelled as the parsed values rather than the typed text: ``tasks`` (``--tasks ppl,qa``) is ``["ppl", "qa"]``,
and ``model`` (``--model A --model B``) is ``["A", "B"]``; an empty ``model`` means the embedded default model.

    >>> config = RunConfig(tasks=["ppl"], limit=5, batch_size="8", no_cache=True)
    >>> config.validate().batch_size, config.cache_mode
    (8, 'off')

:meth:`RunConfig.validate` is the only place a value is checked; it returns the config with every value in its
effective type (``batch_size`` ``"8"`` becomes ``8``), and raises a one-line :class:`LlamabenchError` naming the
flag otherwise, before any task is read or any model loads.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from llamabench.digits import ascii_int
from llamabench.errors import LlamabenchError
from llamabench.shard_spec import parse_shard
from llamabench.urls import shown

# Seeds feed numpy, Python and torch generators; 2**63 keeps every one of them happy.
MAX_SEED = 2**63
# Key/value caches for generation: transformers' growing one, or a preallocated one that lets it compile the
# decoding step (on CUDA it does, with CUDA graphs), which removes most per-token Python and launch overhead.
KV_CACHES = ("dynamic", "static")
# accelerate's placements of one model over every visible GPU (``from_pretrained(device_map=...)``).
DEVICE_MAPS = ("auto", "balanced", "sequential")
# Task names that start with this run lm-eval's task of the rest of the name (``interop/lm_eval``).
LM_EVAL_PREFIX = "lm_eval:"
# Experiment trackers for --log-to: each name is also the Python package it needs and the pip extra installing it.
TRACKERS = ("mlflow", "wandb", "tensorboard")
# How a --text file or folder is cut into documents: one per file, per line, or per blank-line paragraph.
TEXT_FORMATS = ("text", "lines", "paragraphs")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``llamabench run`` takes; the defaults are the CLI's, except ``output_dir``: the CLI writes to
    ``runs/``, the Python API writes nothing unless given a folder. See the module docstring."""

    tasks: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    text_format: str | None = None
    word_rule: str | None = None
    allow_data_outside: bool = False
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int | str = "auto"
    device: str | None = None
    device_map: str | None = None
    kv_cache: str = "dynamic"
    dtype: str | None = None
    max_length: int | None = None
    data_dir: Path | None = None
    output_dir: Path | None = None
    tasks_dir: list[Path] = field(default_factory=list)
    include_path: list[Path] = field(default_factory=list)
    metrics_module: list[Path] = field(default_factory=list)
    seed: int = 0
    bootstrap_iters: int = 1000
    trust_remote_code: bool = False
    no_cache: bool = False
    refresh: bool = False
    log_to: list[str] = field(default_factory=list)
    shard: str | None = None  # "I/N" or "auto" (a Slurm array); validated into "I/N" (see scale/shards.py)
    ray: str | None = None  # a Ray cluster address, or "local" (see scale/ray_backend.py)
    # A model served over HTTP (--model http://HOST:PORT/v1): see docs/servers.md.
    served_model: str | None = None
    tokenizer: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrent_requests: int = 8
    request_timeout: float = 120.0
    request_retries: int = 5
    engine: str = "hf"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        """The configuration the parsed flags of ``run`` or ``watch`` give (one field per flag, same name)."""
        values = {item.name: getattr(args, item.name) for item in fields(cls) if hasattr(args, item.name)}
        values["tasks"] = [name.strip() for name in (args.tasks or "").split(",") if name.strip()]
        values["model"] = [model for model in getattr(args, "model", None) or [] if model is not None]
        return cls(**values)

    @classmethod
    def from_keywords(cls, caller: str, tasks: Sequence[str], flags: dict) -> RunConfig:
        """The configuration of a Python call (``caller`` names it in errors) on ``tasks`` with keyword arguments
        named as the flags; an unknown name is a one-line error listing the known ones."""
        known = {item.name for item in fields(cls)} - {"tasks"}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise LlamabenchError(
                f"{caller}: unknown setting(s) {', '.join(unknown)}; the settings are the flags of `llamabench run`, "
                f"named as in Python: {', '.join(sorted(known))}"
            )
        return cls(tasks=list(tasks), **flags)

    @property
    def cache_mode(self) -> str:
        """How the request cache is used: ``use`` (read and store), ``refresh`` (recompute and store), ``off``."""
        return "off" if self.no_cache else "refresh" if self.refresh else "use"

    @property
    def text_format_used(self) -> str:
        return self.text_format or "text"

    @property
    def word_rule_used(self) -> str:
        return self.word_rule or "lm_eval"

    def validate(self) -> RunConfig:
        """Check every value; return the config with ``batch_size`` and the paths in their effective types.
        Raises :class:`LlamabenchError` naming the flag at fault."""
        from llamabench.metrics.perplexity import WORD_RULES  # the rules are functions there; loaded on use

        batch_size = _batch_size(self.batch_size)
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _LIST_FIELDS and not isinstance(value, list | tuple):
                flag = "--" + item.name.replace("_", "-")
                raise LlamabenchError(
                    f"{item.name} takes a list ({flag} may be given several times): write {item.name}=[{value!r}]"
                )
        shard = None if self.shard is None else str(parse_shard(self.shard))
        checks = [
            (
                shard is None or not any(name.startswith(LM_EVAL_PREFIX) for name in self.tasks),
                f"--shard splits llamabench's own tasks, not {LM_EVAL_PREFIX} ones; run those without --shard",
            ),
            (not (self.ray and self.device_map), "--ray and --device-map conflict: Ray runs one replica per worker"),
            (
                bool(self.text) or not (self.text_format or self.word_rule),
                "--text-format and --word-rule apply to --text tasks; add --text PATH or drop them",
            ),
            (
                not (self.no_cache and self.refresh),
                "--no-cache and --refresh conflict: --refresh recomputes and stores; pick one",
            ),
            (self.text_format in (None, *TEXT_FORMATS), f"--text-format must be one of {', '.join(TEXT_FORMATS)}"),
            (self.word_rule in (None, *WORD_RULES), f"--word-rule must be one of {', '.join(WORD_RULES)}"),
            (self.kv_cache in KV_CACHES, f"--kv-cache must be one of {', '.join(KV_CACHES)}"),
            (self.device_map in (None, *DEVICE_MAPS), f"--device-map must be one of {', '.join(DEVICE_MAPS)}"),
            (self.limit is None or self.limit >= 1, f"--limit {self.limit} must be a positive number of documents"),
            (self.num_fewshot is None or self.num_fewshot >= 0, f"--num-fewshot {self.num_fewshot} must be >= 0"),
            (self.max_length is None or self.max_length >= 2, f"--max-length {self.max_length} must be >= 2 tokens"),
            (0 <= self.seed < MAX_SEED, f"--seed {self.seed} must be a whole number from 0 to {MAX_SEED - 1}"),
            (
                _ENV_NAME.fullmatch(self.api_key_env or "") is not None,
                f"--api-key-env {self.api_key_env} must name an environment variable (letters, digits, _)",
            ),
            (
                self.max_concurrent_requests >= 1,
                f"--max-concurrent-requests {self.max_concurrent_requests} must be >= 1",
            ),
            (self.request_timeout > 0, f"--request-timeout {self.request_timeout} must be > 0 seconds"),
            (self.request_retries >= 0, f"--request-retries {self.request_retries} must be >= 0"),
            (self.bootstrap_iters >= 0, f"--bootstrap-iters {self.bootstrap_iters} must be >= 0 (0 or 1: no stderr)"),
        ]
        for ok, message in checks:
            if not ok:
                raise LlamabenchError(message)
        for name in self.log_to:
            problem = _tracker_problem(name)
            if problem:
                raise LlamabenchError(problem)
        return replace(
            self,
            batch_size=batch_size,
            shard=shard,
            data_dir=None if self.data_dir is None else Path(self.data_dir),
            output_dir=None if self.output_dir is None else Path(self.output_dir),
            tasks_dir=[Path(path) for path in self.tasks_dir],
            include_path=[Path(path) for path in self.include_path],
            metrics_module=[Path(path) for path in self.metrics_module],
        )

    def record(self, model: str | None) -> dict:
        """The configuration as the manifest records it for one run of ``model`` (paths as text)."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["model"] = shown(model)  # a server URL without its user:password
        return {key: _plain(value) for key, value in values.items()}


# The fields of flags given once per value (``--tasks-dir A --tasks-dir B``), and ``tasks`` and ``model``: lists,
# so that one path given as text is not read character by character.
_LIST_FIELDS = ("tasks", "model", "text", "tasks_dir", "include_path", "metrics_module")
# An environment variable's name, as POSIX shells accept one.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _tracker_problem(name: str) -> str | None:
    """Why ``--log-to NAME`` cannot log (unknown, or its tool not installed), as one line; None when it can. The
    tool is looked up, not imported."""
    if name not in TRACKERS:
        return f"--log-to {name}: unknown tracker; pick one of {', '.join(TRACKERS)}"
    try:
        installed = importlib.util.find_spec(name) is not None
    except ValueError:  # set to None in sys.modules: import blocked, as good as not installed
        installed = False
    if not installed:
        return f"--log-to {name}: {name} is not installed; install it with pip install 'llamabench[{name}]'"
    return None


def _batch_size(value: int | str) -> int | str:
    """``auto`` or a positive whole number (given as a number or as its digits)."""
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and (ascii_int(value) or 0) >= 1:
        return ascii_int(value)
    raise LlamabenchError(f"--batch-size {value} must be 'auto' or a positive whole number")


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
