"""The run manifest, built once: a run's identity, the model and backend that ran it, its configuration, a note per
task (documents, seconds, the settings that make runs comparable) and what else its evaluators recorded.

Each evaluator (native tasks in ``native.py``, lm-eval tasks in ``interop/lm_eval/tasks.py``) returns a partial
:class:`~llamabench.records.results.RunResult` whose manifest holds only its ``tasks`` notes and its own sections
(lm-eval: ``lm_eval``); :func:`~llamabench.records.results.build_run` joins the parts into the run, with every
field (the per-sample file names too) decided there: nothing edits a manifest afterwards.

On disk (``manifest.json``, the run store) a manifest is the JSON object :meth:`Manifest.to_dict` gives: the keys
it always had, each section as a top-level key, and ``schema_version`` (:data:`SCHEMA_VERSION`). Manifests written
before the version existed read as version 0 (:meth:`Manifest.from_dict`) with the same meaning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from llamabench.records.settings import Settings

if TYPE_CHECKING:
    from llamabench.backends.base import BackendInfo

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest(Mapping):
    """A run's manifest. llamabench reads its attributes; it also reads as the JSON mapping (``manifest["model"]``),
    for scripts written against the dict it was before."""

    run_id: str | None = None  # None: a partial manifest of one evaluator, not yet a run's
    model: str | None = None
    started: str | None = None
    backend: dict = field(default_factory=dict)  # BackendInfo's record and the backend's statistics
    config: dict = field(default_factory=dict)  # the RunConfig, JSON-ready
    tasks: dict[str, dict] = field(default_factory=dict)  # per task: documents, seconds, task_hash, settings, ...
    llamabench_version: str | None = None
    step: int | None = None  # a training step (watch, in-memory evaluation)
    sample_files: dict[str, str] | None = None  # per task: the stem of its per-sample files
    sections: dict[str, Any] = field(default_factory=dict)  # what else was recorded (``lm_eval``, the layout, ...)
    schema_version: int = SCHEMA_VERSION

    def settings(self, task: str) -> Settings | None:
        """The settings recorded for ``task``, or None for runs made before settings were recorded."""
        record = (self.tasks.get(task) or {}).get("settings")
        return None if record is None else Settings.from_record(record)

    @property
    def backend_info(self) -> BackendInfo:
        from llamabench.backends.base import BackendInfo

        return BackendInfo.from_record({"model": self.model or "unknown", **self.backend})

    def to_dict(self) -> dict:
        """The JSON object written to disk (the keys of every earlier version, sections at the top level)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sections"}
        if self.step is None:
            del plain["step"]
        if self.sample_files is None:
            del plain["sample_files"]
        return {**plain, **self.sections}

    @classmethod
    def from_dict(cls, data: Mapping) -> Manifest:
        """A manifest as any version wrote it (no ``schema_version``: version 0, the same keys)."""
        if isinstance(data, Manifest):
            return data
        names = {f.name for f in fields(cls)} - {"sections"}
        known = {key: value for key, value in data.items() if key in names}
        known.setdefault("schema_version", 0)
        if known.get("step") is not None:
            known["step"] = int(known["step"])
        return cls(**known, sections={key: value for key, value in data.items() if key not in names})

    # Read as the JSON mapping.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
