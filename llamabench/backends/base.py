"""The model backend interface: three batched calls, results in input order."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

# Called as each executed batch finishes, with the indices (into the call's requests) of the requests that batch
# completed and their results: a wrapper stores them at once, so a kill loses at most the batch in flight.
OnDone = Callable[[list[int], list], None]


class Backend(ABC):
    """A language model that can score and generate text in batches."""

    model_id: str = "unknown"
    fingerprint: str = "unknown"
    progress: bool = True

    @abstractmethod
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        """Per request: log P(continuation | context) and whether greedy decoding would produce it."""

    @abstractmethod
    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        """Per request: log P(text) over all its tokens, and the number of tokens scored (a request is done once
        all its windows are scored)."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        """Per request: the generated continuation, cut before the first stop sequence."""

    def require_generation(self, task: str | None = None) -> None:  # noqa: B027 (optional: a default that passes)
        """Refuse, before any request of a run is computed, generation this backend cannot run as transformers'
        ``generate`` would (one line naming ``task``); a backend that can always generate does nothing."""

    def apply_chat_template(self, text: str) -> str:
        """Wrap ``text`` as one user turn in the model's chat template."""
        raise LlamabenchError(f"model {self.model_id} has no chat template; set chat_template: false in the task")

    def info(self) -> BackendInfo:
        """What this backend is and the settings it decided (the effective ``max_length``, ``dtype``, ...)."""
        return BackendInfo(model=self.model_id, fingerprint=self.fingerprint)

    def statistics(self) -> dict:
        """What this backend counted so far (batch sizes, peak memory, cache hits), for the run manifest."""
        return {}

    def cache_identity(self) -> str:
        """Everything about this backend that changes its numbers, for keying stored results."""
        return self.info().cache_identity()

    def describe(self) -> dict:
        """The manifest's ``backend`` section: :meth:`info`'s record and the statistics."""
        return {**self.info().record(), **self.statistics()}


class BackendWrapper(Backend, ABC):
    """A backend that adds behaviour around ``inner`` (caching, sharding) and delegates the rest to it."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.model_id = inner.model_id
        self.fingerprint = inner.fingerprint

    def apply_chat_template(self, text: str) -> str:
        return self.inner.apply_chat_template(text)

    def require_generation(self, task: str | None = None) -> None:
        self.inner.require_generation(task)

    def info(self) -> BackendInfo:
        return self.inner.info()

    def statistics(self) -> dict:
        return self.inner.statistics()


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and the settings it decided, read by the run (settings, manifest) and the request cache.

    The effective ``max_length`` is decided once, in the backend (``--max-length`` or the model's own window), and
    read from here. The fields a task's :class:`~llamabench.settings.Settings` shares with this record
    (:data:`~llamabench.settings.BACKEND_SETTINGS`) are taken from it by name. ``engine`` holds the rest of what
    changes a stored number bit for bit (device type, attention kernels, library versions, special tokens), as
    ``name=value`` texts.
    """

    model: str
    fingerprint: str
    max_length: int | None = None
    dtype: str | None = None
    kv_cache: str | None = None
    trust_remote_code: bool = False
    generation_settings: dict | None = None
    tokenizer: str | None = None  # a hash of the tokenizer as loaded
    device: str | None = None
    engine: tuple[str, ...] = field(default=(), compare=True)

    def cache_identity(self) -> str:
        """The part of a request cache key that names the backend: everything here but where it ran (``device``:
        its type is in ``engine``), and every backend-decided setting of :class:`~llamabench.settings.Settings`."""
        from llamabench.settings import BACKEND_SETTINGS  # settings.py reads this record: imported when keyed

        settings = {name: getattr(self, name) for name in BACKEND_SETTINGS}
        return json.dumps(
            [self.fingerprint, f"tokenizer={self.tokenizer}", settings, *self.engine], sort_keys=True, default=str
        )

    def record(self) -> dict:
        """The manifest's ``backend`` keys (as ``describe()`` wrote them before this record existed)."""
        kept = {key: value for key, value in asdict(self).items() if key != "engine"}
        return {key: value for key, value in kept.items() if value is not None or key in _ALWAYS_RECORDED}

    @classmethod
    def from_record(cls, record: dict) -> BackendInfo:
        """The record of a manifest's ``backend`` section (statistics and unknown keys are left out)."""
        known = {key: record[key] for key in cls.__dataclass_fields__ if key in record and key != "engine"}
        return cls(**{"model": "unknown", "fingerprint": "unknown", **known})


# Keys a backend that decides them always wrote, even when None (a checkpoint without generation settings).
_ALWAYS_RECORDED = frozenset({"generation_settings"})
