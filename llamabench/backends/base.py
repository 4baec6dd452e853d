"""The model backend interface: three batched calls, results in input order.

A second backend (vLLM, an HTTP server) is written from this module alone: the rules below are what the numbers
of the transformers backend (``hf.py``, ``score_rows.py``) follow, which are lm-eval's HF rules, and what
``tests/test_backend_contract.py`` checks by hand computation on a tiny model.

Rules every call follows:

- **Order**: one result per request, in the order of the requests; an empty list gives an empty list. A backend
  may batch, sort or shard requests as it likes, but no result may depend on which other requests share its batch
  (beyond floating-point summation order).
- **on_done**: if given, called as each batch finishes, with the indices (into this call's ``requests``) of the
  requests that batch completed and their results, in matching order; every index exactly once over the call
  (a rolling request is complete when its last window is scored). Wrappers store results there, so a kill loses
  at most the batch in flight. The return value still holds every result in input order.
- **Non-finite numbers**: a NaN or infinite logit or log-probability raises
  :class:`~llamabench.backends.finite.NonFiniteError` (``finite.require_finite``) before it is summed, compared,
  sampled from or handed to ``on_done``; never a result that holds one.
- **Tokens**: texts are encoded without special tokens; the *prefix token* is the tokenizer's BOS id (its EOS
  id when it has no BOS); ``max_length`` is the context window in tokens.
- **Identity**: a result is stored (request cache, run) only under the identity that computed it.
  :meth:`Backend.verify_identity` checks that what computes the numbers is still what :meth:`Backend.cache_identity`
  names; results computed since the last check that agreed are held back until the next one agrees.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest

# Called as each executed batch finishes, with the indices (into the call's requests) of the requests that batch
# completed and their results: a wrapper stores them at once, so a kill loses at most the batch in flight.
OnDone = Callable[[list[int], list], None]


class IdentityChanged(LlamabenchError):
    """What computes a backend's numbers is no longer what its cache identity names (weights rewritten on disk, a
    server serving other weights under the same name, a replica restarted on other weights): nothing computed
    since the last check that agreed is recorded or cached."""


class Backend(ABC):
    """A language model that can score and generate text in batches."""

    model_id: str = "unknown"
    # A hash of the weights' bytes (``model_fingerprint.py``); "unknown" (the default) makes results uncacheable.
    fingerprint: str = "unknown"
    progress: bool = True

    @abstractmethod
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        """Per request: ``(log P(continuation | context), is_greedy)``.

        The space between context and continuation: trailing whitespace of the context (any, as ``str.rstrip``:
        spaces, newlines, tabs) moves to the front of the continuation, whose log-probability then counts it. The
        continuation's tokens are those that encoding context and continuation *together* adds after the
        context's own tokens, so a merge across the boundary is scored as the model would see it::

            context "Question: sky?\n", continuation "Answer: blue"
            -> context "Question: sky?", continuation "\nAnswer: blue"
            -> tokens(context) = [c1 .. c5];  tokens(context + continuation) = [c1 .. c5, x1 .. x4]
            -> scored: log P(x1 | c1..c5) + log P(x2 | c1..c5 x1) + ... + log P(x4 | c1..c5 x1 x2 x3)

        The empty context (all whitespace counts as empty): the continuation is scored after the prefix token,
        ``[BOS, x1 .. xn]``, so its first token has a probability too. A continuation empty after the move is an
        error (``LlamabenchError``).

        Left truncation: of the tokens ``context + continuation`` only the last ``max_length + 1`` are kept (the
        last token is predicted, never fed, so the model sees at most ``max_length``): the sequence's first tokens
        go (the prefix token of an empty context among them), and of a continuation longer than the window its
        first tokens too, which are then not scored. With ``max_length`` 4, context ``[c1 c2 c3]`` and continuation
        ``[x1 x2 x3]``: kept ``[c2 c3 x1 x2 x3]``, fed ``[c2 c3 x1 x2]``, scored ``x1 x2 x3``;
        ``truncated_tokens`` reports 1.

        ``is_greedy``: every scored token is the argmax of the logits at its position (the first index on a
        tie), i.e. greedy decoding from the context would produce exactly the continuation's tokens.
        """

    @abstractmethod
    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        """Per request: ``(log P(text), n_tokens)``, the sum over every token of the text and how many tokens
        that is (the text's token count: every token is scored exactly once; an empty text gives ``(0.0, 0)``).

        lm-eval's rolling windows: the first window is the prefix token then the first ``max_length`` tokens and
        scores all of them; each next window scores the next ``step`` tokens (``step = min(stride, max_length)``,
        default ``max_length``), each given as many tokens before it as fit in ``max_length``. A text of 10
        tokens ``t0 .. t9``, ``max_length`` 4 (``[..]`` are given, ``(..)`` scored)::

            stride None (4):  [BOS] (t0 t1 t2 t3)        fed BOS t0 t1 t2
                              [t3] (t4 t5 t6 t7)         fed t3 t4 t5 t6
                              [t5 t6 t7] (t8 t9)         fed t5 t6 t7 t8
            stride 2:         [BOS] (t0 t1 t2 t3)
                              [t1 t2 t3] (t4 t5)         fed t1 t2 t3 t4
                              [t3 t4 t5] (t6 t7)
                              [t5 t6 t7] (t8 t9)

        ``n_tokens`` is 10 either way. Nothing is ever truncated (``truncated_tokens`` is 0).
        """

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        """Per request: the generated continuation (the new tokens decoded, special tokens skipped), cut before
        the earliest occurrence of any of ``until``.

        Prompt truncation: the prompt keeps its last ``max_length - max_new_tokens`` tokens (lm-eval's
        ``max_ctx_len``); ``max_new_tokens >= max_length`` is an error (``requests.require_prompt_room``). A
        prompt of 30 tokens, ``max_length`` 32, ``max_new_tokens`` 4: the last 28 are kept,
        ``truncated_tokens`` reports 2. The prompt is encoded without special tokens (no BOS).

        Generation stops at the first of: any of the model's end-of-sequence ids (every id of its generation
        config and the tokenizer's, ``stops.eos_token_ids``; the id itself is not part of the text); a stop
        string of ``until`` appearing in the decoded text (the text is cut before the earliest one, so
        ``until=("\n", ".")`` on ``"Paris. And\n"`` gives ``"Paris"``); ``max_new_tokens`` new tokens.

        ``greedy``: each new token is the argmax of the logits (after the checkpoint's honoured generation
        settings, as transformers' ``generate`` applies them). Sampled (``greedy=False``): temperature 1 from the
        request's own generator seeded with ``request.seed``, so the same request gives the same text in any
        batch and any run, and two requests differing only in their seed are independent samples.
        """

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int | None]:
        """Per request: how many of its tokens this backend drops to fit its window, by the rules of the call
        that answers it (left truncation in ``loglikelihood``, the prompt rule in ``generate``, 0 for
        ``loglikelihood_rolling``); ``None`` where the backend cannot tell.

        The contract for truncation counts: a side channel, a pure function of the request, the tokenizer and
        ``max_length`` that runs no model, so counts never travel with results. Results served from the request
        cache get their counts recomputed here (the cache key holds the tokenizer and window, so they match the
        results). This default says "unknown" (``None``, recorded as unknown, never as 0); every backend that
        truncates should override it.
        """
        return [None] * len(requests)

    def require_generation(self, task: str | None = None) -> None:  # noqa: B027 (optional: a default that passes)
        """Refuse, before any request of a run is computed, generation this backend cannot run as transformers'
        ``generate`` would (one line naming ``task``); a backend that can always generate does nothing."""

    def require_loglikelihoods(self, task: str | None = None) -> None:  # noqa: B027 (optional: a default that passes)
        """Refuse, before any request of a run is computed, log-likelihood scoring this backend cannot do (a
        server that returns no prompt log-probabilities), in one line naming ``task``; by default it can."""

    def close(self) -> None:  # noqa: B027 (optional: a backend that holds nothing does nothing)
        """Release what this backend holds (an engine's memory and processes, worker actors), once, after its last
        call. Whoever opened a backend closes it; a wrapper (cache, shards) does not close the backend it wraps,
        which its opener closes."""

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
        """Everything about this backend that changes its numbers, for keying stored results: a stored result
        is reused only under an equal identity, so it must change with the weights (``fingerprint``, a hash of
        their bytes), the tokenizer, the prefix token, dtype, device type, ``max_length``, the end-of-sequence
        ids and generation settings, and the versions of the code that computes (kernels, tokenisation). Leaving
        one out serves numbers computed under another setting. Built from :meth:`info`
        (:meth:`BackendInfo.cache_identity`)."""
        return self.info().cache_identity()

    def verify_identity(self) -> None:  # noqa: B027 (optional: a default that passes)
        """Return if what computes this backend's numbers is still what :meth:`cache_identity` names; else raise
        :class:`IdentityChanged` in one line naming the model, what changed and the fix.

        Called by the request cache at the end of every call and, within a call, once the time since the last
        check is :data:`~llamabench.backends.wrappers.cache.CHECK_RATIO` times what that check took; and by the
        pipeline before a run is recorded. Results wait in memory until a check after them agrees::

            call 1: batch b1, batch b2, check agrees          -> b1 b2 stored
            call 2: batch b3, (the weights are rewritten), b4, check fails
                                                               -> b3 b4 dropped, the run stops (exit 2)

        Each engine checks what can change under it, at its cost: the weight files it maps (hashed again, every
        byte), the model behind a server (probed again; also after every retried request), each Ray replica
        (every batch comes back with the identity of the replica that computed it, a restarted one included). A
        backend whose numbers cannot change under it (a model copied into memory) keeps this default: no check.
        """

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

    def require_loglikelihoods(self, task: str | None = None) -> None:
        self.inner.require_loglikelihoods(task)

    def info(self) -> BackendInfo:
        return self.inner.info()

    def statistics(self) -> dict:
        return self.inner.statistics()

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int | None]:
        return self.inner.truncated_tokens(requests)

    def verify_identity(self) -> None:
        self.inner.verify_identity()


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and the settings it decided, read by the run (settings, manifest) and the request cache.

    The effective ``max_length`` is decided once, in the backend (``--max-length`` or the model's own window), and
    read from here. The fields a task's :class:`~llamabench.records.settings.Settings` shares with this record
    (:data:`~llamabench.records.settings.BACKEND_SETTINGS`) are taken from it by name. ``engine`` holds the rest of what
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
    engine_name: str | None = None  # the engine that computed (hf, vllm, server): a setting (records/settings.py)

    def cache_identity(self) -> str:
        """The part of a request cache key that names the backend: everything here but where it ran (``device``:
        its type is in ``engine``), and every backend-decided setting (:data:`BACKEND_SETTINGS`)."""
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


# The settings a backend decides (a field of BackendInfo each, and one of the run's Settings each): its cache
# identity holds every one of them.
BACKEND_SETTINGS = ("max_length", "dtype", "trust_remote_code", "generation_settings", "kv_cache")

# Keys a backend that decides them always wrote, even when None (a checkpoint without generation settings).
_ALWAYS_RECORDED = frozenset({"generation_settings"})
