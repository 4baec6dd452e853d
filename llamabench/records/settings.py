"""What changes a number: the settings of one task in one run, as one typed record.

Everything that decides whether two numbers may be compared or one may stand for another is derived from
:class:`Settings` and its field list:

- ``check`` and ``report`` comparability: :meth:`Settings.differences` (``comparability.py`` reads records with it);
- the request cache key: the settings the backend decides (:data:`BACKEND_SETTINGS`, the fields
  :class:`~llamabench.backends.base.BackendInfo` shares with ``Settings``) are in
  :meth:`BackendInfo.cache_identity`; the others change the requests themselves (their text, few-shot draw,
  seed), which the key holds;
- the task hash: :attr:`Settings.task_hash` is :attr:`TaskSpec.config_hash`;
- ``watch``'s "already evaluated" rule: :func:`watch_differences` (and :func:`flag_differences` for lm-eval tasks,
  whose settings are recorded once lm-eval ran them);
- ``merge``'s rule for shards: their settings equal, and every flag equal but :data:`NO_NUMBER_FLAGS`;
- the ``signature`` column is not a setting of the task: it is per metric (sacrebleu's signature, a word rule), what
  besides the data one row's figure depends on, and is compared row by row with the rows.

Each field is decided either before any model loads (by the flags and the prepared tasks: ``run``) or when the
model loads (``model``: the effective ``max_length`` and ``dtype`` depend on the checkpoint unless a flag pins
them; the generation settings are the checkpoint's own). A ``model`` field names the ``RunConfig`` fields that
request it; the checkpoint's files are identified by its content fingerprint.

Serialised form (``manifest["tasks"][task]["settings"]``): every field by name, ``no_effect`` (a list) and
``format`` (:data:`FORMAT`). Records written before the format was versioned (no ``format`` key, format 1)
read as they are; a setting one of two records lacks (added in a later format) is not compared, so old runs
compare exactly as they did.

Batch size is no setting: it changes how requests are grouped and padded, which moves a score by float rounding
only (the request cache serves one batch size's results to another, and ``check`` compares such runs). Nor is the
version of an engine (torch, transformers, vLLM, a server's): an upgrade runs other kernels, which moves a score by
float rounding only; the request cache key holds the versions (stored results are recomputed), ``check``, ``merge``
and ``watch`` compare across them. The engine itself is a setting (``engine``): hf, vllm and a server tokenise
alike but sum in other orders, sample from other generator streams and may break a near-tie of greedy decoding
the other way, so a run on one engine is never compared with, merged with or standing for a run on another
(docs/reproducibility.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamabench.backends.base import BACKEND_SETTINGS
from llamabench.config import RunConfig

if TYPE_CHECKING:
    from llamabench.backends.base import BackendInfo

FORMAT = 2
RUN, MODEL = "run", "model"


def _setting(decided: str = RUN, requested_by: tuple[str, ...] = ()) -> Any:
    return field(metadata={"decided": decided, "requested_by": requested_by})


@dataclass(frozen=True)
class Settings:
    """The settings of one task in one run that can change one of its numbers (see the module docstring)."""

    task_hash: str | None = _setting()  # the task definition: templates, metrics, generation, delimiters
    num_fewshot: int | None = _setting()  # the effective few-shot count (after --num-fewshot)
    limit: int | None = _setting()  # --limit
    seed: int | None = _setting()  # --seed: few-shot draws, sampled generations, bootstrap
    max_length: int | None = _setting(MODEL, ("max_length",))  # the effective context window in tokens
    dtype: str | None = _setting(MODEL, ("dtype", "device"))  # as the model ran (the default follows the device)
    chat_template: bool | None = _setting()  # prompts wrapped in the model's chat template
    trust_remote_code: bool | None = _setting()  # the model ran its own code
    generation_settings: dict | None = _setting(MODEL)  # generating tasks: the checkpoint's honoured fields
    # generating tasks: the KV cache the engine decoded with (--kv-cache on hf: the static path decodes otherwise)
    kv_cache: str | None = _setting(MODEL, ("kv_cache", "engine"))
    engine: str | None = _setting(MODEL, ("engine",))  # the engine that computed (hf, vllm, server): see above
    data_hash: str | None = _setting()  # every loaded document, every field
    metric_versions: Mapping[str, str] | None = _setting()  # bumped when a metric's definition changes a number
    # Not settings: which of them cannot change a number here, and which an older record does not hold.
    no_effect: frozenset[str] = field(default=frozenset(), compare=False)
    unrecorded: frozenset[str] = field(default=frozenset(), compare=False)

    @staticmethod
    def names(decided: str | None = None) -> tuple[str, ...]:
        """The settings, in record order; ``decided`` (``run`` or ``model``) keeps those decided then."""
        return tuple(f.name for f in fields(Settings) if f.metadata and decided in (None, f.metadata["decided"]))

    def differences(self, other: Settings, names: Sequence[str] | None = None) -> list[str]:
        """The settings (of ``names``, default all) that differ, as ``"name self vs other"``; a setting neither
        run can change a number by, or one either record lacks, is not compared."""
        skip = (self.no_effect & other.no_effect) | self.unrecorded | other.unrecorded
        return [
            f"{name} {getattr(self, name)} vs {getattr(other, name)}"
            for name in (self.names() if names is None else names)
            if name not in skip and getattr(self, name) != getattr(other, name)
        ]

    def record(self) -> dict:
        """The serialised form (JSON-ready)."""
        names = self.names()
        return {
            "format": FORMAT,
            **{name: getattr(self, name) for name in names if name not in self.unrecorded},
            "no_effect": [name for name in names if name in self.no_effect],
        }

    def for_generation(self, generates: bool) -> Settings:
        """These settings with those of generation only (the checkpoint's generation config, the KV cache) unset
        when the task generates nothing: they change generated text, not scores."""
        return self if generates else replace(self, generation_settings=None, kv_cache=None)

    @classmethod
    def from_record(cls, record: Mapping) -> Settings:
        """A record as :meth:`record` wrote it, in any format so far."""
        names = cls.names()
        return cls(
            **{name: record.get(name) for name in names},
            no_effect=frozenset(record.get("no_effect", ())),
            unrecorded=frozenset(name for name in names if name not in record),
        )


def make(
    *,
    task_hash: str,
    num_fewshot: int | None,
    limit: int | None,
    seed: int,
    backend: BackendInfo,
    chat_template: bool,
    data_hash: str | None,
    metric_versions: dict[str, str],
    available: int | None = None,
    seed_used: bool = True,
    generates: bool = True,
) -> Settings:
    """Settings from their parts. ``available`` is the task's document count before ``--limit`` (None: unknown):
    a limit at or above it is no limit."""
    no_effect = set()
    if limit is None or (available is not None and limit >= available):
        no_effect.add("limit")
    if not seed_used:
        no_effect.add("seed")
    return Settings(
        task_hash=task_hash,
        num_fewshot=num_fewshot,
        limit=limit,
        seed=seed,
        chat_template=chat_template,
        data_hash=data_hash,
        metric_versions=dict(metric_versions),
        **{name: getattr(backend, name) for name in BACKEND_SETTINGS},
        engine=backend.engine_name,
        no_effect=frozenset(no_effect),
    ).for_generation(generates)


# The flags that change no number, each with why: shards and restarted watches may differ in them. Every other
# flag is compared where runs are joined (merge) or one stands for another (watch of lm-eval tasks).
NO_NUMBER_FLAGS = (
    *("shard", "ray", "model"),  # which part, where and which checkpoint ran: recorded apart (shard, fingerprint)
    *("output_dir", "data_dir", "tasks_dir", "include_path"),  # paths: the data and tasks are hashed (data_hash)
    *("device", "batch_size"),  # where and how grouped: float rounding only (see the module docstring)
    *("no_cache", "refresh"),  # whether stored results were reused: the cache key holds every setting
    "log_to",  # where results are also sent
    *("request_timeout", "request_retries", "max_concurrent_requests", "api_key_env"),  # how a server is asked
)


def requested(config: RunConfig) -> dict:
    """The ``RunConfig`` fields that request the ``model``-decided settings, as a manifest's config holds them."""
    keys = [key for f in fields(Settings) if f.metadata for key in f.metadata["requested_by"]]
    return {key: _plain(getattr(config, key)) for key in dict.fromkeys(keys)}


def flag_differences(stored_config: Mapping, config: RunConfig, keys: Sequence[str] | None = None) -> list[str]:
    """The flags (of ``keys``; default: the tasks, the flags requesting a setting and the settings that are flags,
    every flag that can change a number before any model loads) whose value in a stored run's config differs from
    ``config``'s. A flag the stored run does not record (it predates the flag) had the flag's default."""
    default = RunConfig()
    if keys is None:
        keys = ["tasks", *requested(config), *(name for name in Settings.names(RUN) if hasattr(default, name))]
    why = []
    for key in dict.fromkeys(keys):
        before, now = stored_config.get(key, _plain(getattr(default, key))), _plain(getattr(config, key))
        if before != now:
            why.append(f"{key} {before} vs {now}")
    return why


def watch_differences(
    stored_config: Mapping, stored: Mapping[str, Settings | None], config: RunConfig, expected: Mapping[str, Settings]
) -> list[str]:
    """Why a stored run of a checkpoint is not this watch's evaluation of it (empty: it is).

    ``stored`` holds the run's settings by task, ``expected`` this watch's (``model``-decided fields unknown before
    loading); those are compared by what requested them (``stored_config``, the run's manifest config). The
    caller compares the checkpoint's content fingerprint, which decides the rest of them.
    """
    if set(stored) != set(expected):
        return [f"tasks {sorted(stored)} vs {sorted(expected)}"]
    why = flag_differences(stored_config, config, list(requested(config)))
    for task, settings in expected.items():
        before = stored[task]
        if before is None:
            why.append(f"task {task}: settings not recorded")
        else:
            why += [f"task {task}: {d}" for d in before.differences(settings, Settings.names(RUN))]
    return why


def _plain(value):
    """A config value as the manifest holds it (JSON: paths as text)."""
    return str(value) if isinstance(value, Path) else value
