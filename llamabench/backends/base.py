"""The model backend interface: three batched calls, results in input order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

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

    def cache_identity(self) -> str:
        """Everything about this backend that changes its numbers, for keying stored results."""
        return self.fingerprint

    def describe(self) -> dict:
        """Settings and statistics worth recording in the run manifest."""
        return {"model": self.model_id, "fingerprint": self.fingerprint}


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

    def cache_identity(self) -> str:
        return self.inner.cache_identity()

    def describe(self) -> dict:
        return self.inner.describe()
