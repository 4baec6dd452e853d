"""The token-level half of the Backend contract (``base.py``), written once for every engine that tokenises for
itself: requests become token ids by :class:`RequestTokens` (the context/continuation split, left truncation,
rolling windows, the generation prompt), rolling requests add their windows up (:class:`RollingTotals`),
truncation counts, the chat template, the non-finite rule for scores, the order of results, ``on_done`` and the
progress bar. An engine answers two calls on token ids: :meth:`TokenBackend.score_items` and
:meth:`TokenBackend.generate_jobs`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from llamabench.backends.base import Backend, OnDone
from llamabench.backends.common.model_facts import require_text
from llamabench.backends.common.request_tokens import GenerationJob, RequestTokens
from llamabench.backends.common.score_items import RollingTotals, ScoreItem
from llamabench.backends.finite import DIVERGED, NonFiniteError
from llamabench.escaping import terminal
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest


class TokenBackend(Backend, ABC):
    """A backend whose engine scores token sequences and generates from token prompts; everything between the
    contract's requests and those token-level calls is here."""

    tokens: RequestTokens
    engine_name: str  # its --engine name (backends/registry.py), recorded as the setting ``engine``
    progress_unit = "seq"  # what the progress bar counts

    @abstractmethod
    def score_items(self, items: list[ScoreItem], finished: OnDone, *, share_prefixes: bool) -> None:
        """Score every item, ``(log P(its targets | the tokens before them), every target the argmax)``, calling
        ``finished(indices, scores)`` as each batch completes (every index exactly once). ``share_prefixes``: the
        items are the choices of questions, and an engine may run the tokens several share before their targets
        once (``hf/score_rows.py``); the scores must not change by it beyond summation order."""

    @abstractmethod
    def generate_jobs(self, jobs: list[GenerationJob], finished: OnDone) -> None:
        """Generate each job's continuation (the contract's ``generate`` rules, from its prompt tokens), calling
        ``finished(indices, texts)`` as each batch completes (every index exactly once)."""

    def chat_turn(self, text: str) -> str | None:
        """``text`` as one user turn in the model's chat template, ready for generation; None without one."""
        return None

    # -- the contract ----------------------------------------------------------------------------

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        if requests:
            self.require_loglikelihoods()
        items = [self.tokens.loglikelihood_item(r.context, r.continuation) for r in requests]
        return self._scores(items, "loglikelihood", on_done, share_prefixes=True)

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        if any(request.text for request in requests):
            self.require_loglikelihoods()
        windows_per_request = [self.tokens.rolling_items(r) for r in requests]
        totals = RollingTotals(windows_per_request, on_done)
        flat = [window for windows in windows_per_request for window in windows]
        self._scores(flat, "perplexity windows", totals.add, share_prefixes=False)
        return [totals.result(request) for request in range(len(requests))]

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        if requests:
            self.require_generation()
        jobs = [self._generation_job(request) for request in requests]
        return self._collect(len(jobs), "generation", on_done, lambda finished: self.generate_jobs(jobs, finished))

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int | None]:
        if any(isinstance(request, LoglikelihoodRequest) for request in requests):
            self.require_loglikelihoods()  # an empty context is scored after the prefix token
        return [self.tokens.truncated(request) for request in requests]

    def apply_chat_template(self, text: str) -> str:
        wrapped = self.chat_turn(text)
        return super().apply_chat_template(text) if wrapped is None else wrapped

    # -- shared plumbing ---------------------------------------------------------------------------

    def _generation_job(self, request: GenerationRequest) -> GenerationJob:
        for what, text in [("prompt", request.prompt), *(("stop sequence", stop) for stop in request.until)]:
            require_text(text, what)
        seed = None if request.greedy else request.seed
        return GenerationJob(self.tokens.generation_prompt(request), request.max_new_tokens, request.until, seed)

    def _scores(
        self, items: list[ScoreItem], what: str, on_done: OnDone | None, *, share_prefixes: bool
    ) -> list[tuple[float, bool]]:
        def finite(indices: list[int], scores: list[tuple[float, bool]]) -> None:
            # The contract's non-finite rule, for every engine: no NaN or infinite score is summed, stored or
            # reported (an engine that chooses tokens from logits checks those itself, before choosing).
            if not all(math.isfinite(logprob) for logprob, _ in scores):
                raise NonFiniteError(f"the model produced non-finite log-probabilities; {DIVERGED}")
            if on_done is not None:
                on_done(indices, scores)

        def work(finished: OnDone) -> None:
            self.score_items(items, finished, share_prefixes=share_prefixes)

        return self._collect(len(items), what, finite, work)

    def _collect(self, total: int, what: str, on_done: OnDone | None, work: Callable[[OnDone], None]) -> list:
        """Run ``work`` with a ``finished`` callback that places each result at its index, reports it to
        ``on_done`` and advances the progress bar; the results in input order."""
        results: list = [None] * total
        desc = terminal(f"{self.model_id}: {what}")  # a folder name is untrusted text
        with tqdm(total=total, desc=desc, unit=self.progress_unit, disable=not self.progress or not total) as bar:

            def finished(indices: list[int], values: list) -> None:
                if on_done is not None:
                    on_done(indices, values)
                for index, value in zip(indices, values, strict=True):
                    results[index] = value
                bar.update(len(indices))

            work(finished)
        return results
