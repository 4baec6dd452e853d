"""A model served over HTTP by an OpenAI-compatible server (vLLM, SGLang, llama.cpp): ``--model
http://HOST:PORT/v1``.

Every request goes as token ids, computed here by the contract's rules (``base.py``) with the same helpers the
transformers backend uses (``hf/score_rows.py``: the context/continuation split, left truncation, rolling windows),
so a server scores exactly the tokens the in-process engine scores. Scoring reads the prompt's log-probabilities:
vLLM's ``prompt_logprobs`` extra parameter, or the OpenAI ``echo`` with ``logprobs``; which one the server has is
probed once, when the backend connects. A server with neither still generates; a scoring task then fails before
any request with one line naming the task and the missing capability.

Cache identity: a server's files are not here to hash, so its fingerprint is the served model's name and
maximum context plus a *probe*, the log-probabilities of a fixed text rounded to 2 decimals (greedy completion
log-probabilities where the prompt's are not available). A server that now serves other weights under the same
name answers the probe differently, so the request cache never hands it the old model's results.

The probe is taken again (``verify_identity``) whenever the served weights may have changed under the run: after
any request that was retried (the server may have restarted, a rolling deploy may have moved the address to new
weights), before that request's result is used; at the end of every call and within a call as the request cache
asks (``wrappers/cache.py``); and before the run is recorded. A probe that differs stops the run in one line, and
nothing computed since the last agreeing probe is cached or recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from llamabench import __version__
from llamabench.backends.base import Backend, BackendInfo, IdentityChanged, OnDone
from llamabench.backends.finite import DIVERGED, NonFiniteError
from llamabench.backends.hf.score_rows import RollingTotals, ScoreItem
from llamabench.backends.hf.stops import cut_at_stop
from llamabench.backends.request_tokens import RequestTokens
from llamabench.backends.server.client import RequestRefused, RetryPolicy, ServerClient, ServerError, run_bounded
from llamabench.backends.server.tokens import LocalTokens, ServerTokens, Tokens
from llamabench.errors import LlamabenchError
from llamabench.escaping import terminal
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest

# The text whose log-probabilities identify the served weights (see the module docstring).
PROBE_TEXT = "The capital of France is Paris. 1 2 3 4 5, and the quick brown fox jumps over the lazy dog."
PROBE_DECIMALS = 2
# How prompt log-probabilities are asked for, in the order they are tried.
LOGPROB_FORMS = ("prompt_logprobs", "echo")
# A completions request must generate one token; the scored sequence (max_length + 1 tokens) plus that one must
# fit the server's context.
SERVER_ROOM = 2


class ServerBackend(Backend):
    """A served model, driven through the completions API with at most ``max_in_flight`` requests at once."""

    def __init__(
        self,
        client: ServerClient,
        tokens: Tokens,
        *,
        model: str,
        max_length: int,
        server_context: int | None,
        max_in_flight: int = 8,
    ):
        self.client = client
        self.tokens = tokens
        self.request_tokens = RequestTokens(tokens.encode, tokens.prefix_token, max_length)
        self.model_id = model
        self.max_length = max_length
        self.server_context = server_context
        self.max_in_flight = max_in_flight
        self.version = _server_version(client)
        self.logprob_form = self._probe_logprob_form()
        self.fingerprint = self._fingerprint()
        self.probed_after_retries = client.retried  # the client's retries when the probe was last taken

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        served_model: str | None = None,
        tokenizer: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_length: int | None = None,
        max_in_flight: int = 8,
        policy: RetryPolicy | None = None,
    ) -> ServerBackend:
        """The server at ``url`` (``http://HOST:PORT/v1``), its model ``served_model`` (default: the one it
        serves), the API key read from the environment variable ``api_key_env`` (none when unset)."""
        client = ServerClient(url, api_key=os.environ.get(api_key_env) or None, policy=policy or RetryPolicy())
        entry = _served_entry(client, served_model)
        model = str(entry["id"])
        server_context = _server_context(client, entry)
        tokens = LocalTokens(tokenizer) if tokenizer else ServerTokens(client, model)
        return cls(
            client,
            tokens,
            model=model,
            max_length=_max_length(max_length, server_context, model),
            server_context=server_context,
            max_in_flight=max_in_flight,
        )

    # -- identity --------------------------------------------------------------------------------

    def info(self) -> BackendInfo:
        return BackendInfo(
            model=self.model_id,
            fingerprint=self.fingerprint,
            max_length=self.max_length,
            tokenizer=self.tokens.identity,
            engine=(
                "engine=server",
                f"server_version={self.version}",
                f"prompt_logprobs={self.logprob_form}",
                f"prefix={self.tokens.prefix_token}",
                f"llamabench={__version__}",
            ),
        )

    def statistics(self) -> dict:
        return {
            "server": _without_credentials(self.client.base_url),
            "requests_sent": self.client.sent,
            "requests_retried": self.client.retried,
        }

    def verify_identity(self) -> None:
        """Probe the served model again (see the module): the weights behind the name may have been swapped."""
        retries = self.client.retried
        probed = self._fingerprint()
        self.probed_after_retries = retries
        if probed != self.fingerprint:
            raise IdentityChanged(
                f"server {_without_credentials(self.client.base_url)} now serves other weights under model "
                f"{self.model_id} (its probe answers differently than when the run connected: a redeploy?); nothing "
                "computed since the last agreeing probe was recorded or cached: rerun once the server is stable"
            )

    def _fingerprint(self) -> str:
        probe_tokens = self.tokens.encode(PROBE_TEXT)
        if self.logprob_form is not None:
            answer = [value for value, _ in self._prompt_logprobs(probe_tokens, len(probe_tokens) - 1)]
        else:
            answer = self._greedy_logprobs(probe_tokens)
        rounded = [round(value, PROBE_DECIMALS) + 0.0 for value in answer]  # + 0.0: no -0.0
        spelled = json.dumps([self.model_id, self.server_context, probe_tokens, rounded])
        return "server-" + hashlib.sha256(spelled.encode()).hexdigest()[:32]

    def _greedy_logprobs(self, prompt: list[int]) -> list[float]:
        body = {"model": self.model_id, "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 1}
        choice = _choice(self.client.post("/completions", body))
        values = (choice.get("logprobs") or {}).get("token_logprobs") or []
        return [float(value) for value in values if isinstance(value, int | float)]

    # -- scoring -------------------------------------------------------------------------------

    def require_loglikelihoods(self, task: str | None = None) -> None:
        where = f"task {task} needs" if task else "log-likelihood scoring needs"
        if self.logprob_form is None:
            raise LlamabenchError(
                f"{where} the prompt's log-probabilities, which server {self.client.base_url} (model "
                f"{self.model_id}) does not return (neither vLLM's prompt_logprobs nor echo with logprobs, at the "
                "positions its own generation reports); "
                "serve the model with vLLM, or run the task in-process"
            )
        if self.tokens.prefix_token is None:
            raise LlamabenchError(
                f"{where} the model's BOS token, which server {self.client.base_url} does not describe; pass "
                "--tokenizer PATH (the served model's tokenizer), or serve with vLLM's "
                "--enable-tokenizer-info-endpoint"
            )

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        if not requests:
            return []
        self.require_loglikelihoods()
        items = [self.request_tokens.loglikelihood_item(r.context, r.continuation) for r in requests]
        return self._score(items, "loglikelihood", on_done)

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        if any(request.text for request in requests):
            self.require_loglikelihoods()
        windows_per_request = [self.request_tokens.rolling_items(r) for r in requests]
        totals = RollingTotals(windows_per_request, on_done)
        self._score([window for windows in windows_per_request for window in windows], "perplexity windows", totals.add)
        return [totals.result(request) for request in range(len(requests))]

    def _score(self, items: list[ScoreItem], what: str, on_done: OnDone | None) -> list[tuple[float, bool]]:
        def score(item: ScoreItem) -> tuple[float, bool]:
            scored = self._prompt_logprobs(item.tokens, item.n_target)
            return math.fsum(value for value, _ in scored), all(greedy for _, greedy in scored)

        return self._run(score, items, what, on_done)

    def _prompt_logprobs(self, tokens: list[int], n_target: int) -> list[tuple[float, bool]]:
        """(log-probability, is-argmax) of each of the last ``n_target`` of ``tokens`` given those before it."""
        return [(own, greedy) for own, _, greedy in self._positions(tokens, n_target)]

    def _positions(self, tokens: list[int], n_target: int) -> list[tuple[float, float, bool]]:
        """(log-probability, best log-probability there, is-argmax) of each of the last ``n_target`` tokens."""
        form = self.logprob_form
        body: dict = {"model": self.model_id, "prompt": tokens, "max_tokens": 1, "temperature": 0}
        body |= {"prompt_logprobs": 1} if form == "prompt_logprobs" else {"echo": True, "logprobs": 1}
        choice = _choice(self.client.post("/completions", body))
        read = _read_prompt_logprobs if form == "prompt_logprobs" else _read_echo_logprobs
        try:
            scored = read(choice, tokens, n_target)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ServerError(
                f"server {self.client.base_url} answered without the prompt's log-probabilities ({form}: "
                f"{type(exc).__name__} {exc})"
            ) from None
        if not all(math.isfinite(value) and math.isfinite(best) for value, best, _ in scored):
            raise NonFiniteError(f"the server returned non-finite log-probabilities; {DIVERGED}")
        return scored

    def _probe_logprob_form(self) -> str | None:
        """The first of :data:`LOGPROB_FORMS` the server answers, at the right positions, or None."""
        probe = self.tokens.encode(PROBE_TEXT)
        for form in LOGPROB_FORMS:
            self.logprob_form = form
            try:
                scored = self._positions(probe, len(probe) - 1)
                if len(scored) == len(probe) - 1 and self._agrees_with_generation(probe, scored[-1][1]):
                    return form
            except (RequestRefused, ServerError):
                continue
        return None

    def _agrees_with_generation(self, probe: list[int], best_last: float) -> bool:
        """Whether the prompt log-probabilities sit at the right positions: the best log-probability before the
        probe's last token, as the prompt form reports it, must be that of the token a greedy completion of the
        probe less its last token generates. A server that pairs each prompt token with the next position's
        distribution (llama-cpp-python's ``echo`` for a prompt without BOS) fails, and is not used for scoring."""
        body = {"model": self.model_id, "prompt": probe[:-1], "max_tokens": 1, "temperature": 0, "logprobs": 1}
        values = (_choice(self.client.post("/completions", body)).get("logprobs") or {}).get("token_logprobs") or []
        if not values or not isinstance(values[0], int | float):
            return False
        return math.isclose(float(values[0]), best_last, rel_tol=1e-3, abs_tol=1e-3)

    # -- generation ----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        return self._run(self._generate_one, list(requests), "generation", on_done)

    def _generate_one(self, request: GenerationRequest) -> str:
        prompt = self.request_tokens.generation_prompt(request)
        until = [stop for stop in request.until if stop]
        body: dict = {
            "model": self.model_id,
            "prompt": prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": 0.0 if request.greedy else 1.0,
            # Plain sampling at temperature 1, as the transformers backend does: servers' own defaults (llama.cpp's
            # top_k 40 and min_p 0.05) would otherwise narrow it.
            "top_p": 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "skip_special_tokens": True,
        }
        if until:
            body["stop"] = until
        if not request.greedy:
            body["seed"] = request.seed
        text = _choice(self.client.post("/completions", body)).get("text")
        if not isinstance(text, str):
            raise ServerError(f"server {self.client.base_url} answered a completion without its text")
        return cut_at_stop(text, request.until)

    def apply_chat_template(self, text: str) -> str:
        wrapped = self.tokens.chat(text)
        return super().apply_chat_template(text) if wrapped is None else wrapped

    # -- shared --------------------------------------------------------------------------------

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int]:
        if any(isinstance(request, LoglikelihoodRequest) for request in requests):
            self.require_loglikelihoods()  # an empty context is scored after the prefix token
        return [self.request_tokens.truncated(request) for request in requests]

    def _run(self, work: Callable, items: list, what: str, on_done: OnDone | None) -> list:
        """``work`` on each item, ``max_in_flight`` at a time; each finished item is reported to ``on_done`` at
        once (a batch of one), so a kill loses only the requests in flight."""
        results: list = [None] * len(items)
        desc = terminal(f"{self.model_id}: {what}")
        with tqdm(total=len(items), desc=desc, unit="req", disable=not self.progress or not items) as bar:

            def finished(index: int, result) -> None:
                if self.client.retried != self.probed_after_retries:  # a retried request: was the server replaced?
                    self.verify_identity()
                results[index] = result
                if on_done is not None:
                    on_done([index], [result])
                bar.update(1)

            run_bounded(work, items, self.max_in_flight, finished)
        return results


def _served_entry(client: ServerClient, served_model: str | None) -> dict:
    """The ``/models`` entry of the model to evaluate."""
    listed = client.get("/models").get("data")
    entries = [entry for entry in listed or [] if isinstance(entry, dict) and entry.get("id")]
    names = [str(entry["id"]) for entry in entries]
    if served_model is not None:
        if served_model not in names:
            raise LlamabenchError(
                f"--served-model {served_model}: server {client.base_url} serves {', '.join(names) or 'no model'}"
            )
        return entries[names.index(served_model)]
    if len(entries) != 1:
        raise LlamabenchError(
            f"server {client.base_url} serves {len(entries)} models ({', '.join(names)}); name one with --served-model"
        )
    return entries[0]


def _server_context(client: ServerClient, entry: dict) -> int | None:
    """The server's context window in tokens: vLLM's ``max_model_len``, llama.cpp's ``n_ctx`` (``/props``)."""
    if isinstance(entry.get("max_model_len"), int):
        return entry["max_model_len"]
    try:
        props = client.get("root:/props")
    except RequestRefused:
        return None
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
    return n_ctx if isinstance(n_ctx, int) else None


def _max_length(asked: int | None, server_context: int | None, model: str) -> int:
    """``--max-length``, or the longest that fits the server's context (:data:`SERVER_ROOM` less)."""
    if server_context is None:
        if asked is None:
            raise LlamabenchError(f"the server of model {model} does not report its context length; pass --max-length")
        return asked
    fits = server_context - SERVER_ROOM
    if asked is not None and asked > fits:
        raise LlamabenchError(
            f"--max-length {asked} does not fit the server's {server_context}-token context for model {model} (a "
            f"scored sequence is max_length + 1 tokens and a completion generates one more): use at most {fits}, "
            f"or serve with a context of {asked + SERVER_ROOM}"
        )
    return fits if asked is None else asked


def _server_version(client: ServerClient) -> str | None:
    """The server's version where it tells it (vLLM's ``/version``): an upgrade may change kernels."""
    try:
        version = client.get("root:/version").get("version")
    except RequestRefused:
        return None
    return str(version) if version is not None else None


def _choice(answer: dict) -> dict:
    choices = answer.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        raise ServerError(f"server answered without choices: {str(answer)[:200]}")
    return choices[0]


def _read_prompt_logprobs(choice: dict, tokens: list[int], n_target: int) -> list[tuple[float, float, bool]]:
    """vLLM's ``prompt_logprobs``: per prompt position (None first) ``{token id: {logprob, rank, ...}}``, holding
    the prompt's own token and the top 1."""
    positions = choice["prompt_logprobs"]
    if len(positions) != len(tokens):
        raise ValueError(f"{len(positions)} positions for {len(tokens)} tokens")
    scored = []
    for position in range(len(tokens) - n_target, len(tokens)):
        candidates = positions[position]
        own = candidates[str(tokens[position])]
        best = max(float(entry["logprob"]) for entry in candidates.values())
        rank = own.get("rank")
        value = float(own["logprob"])
        scored.append((value, best, rank == 1 if isinstance(rank, int) else value >= best))
    return scored


def _read_echo_logprobs(choice: dict, tokens: list[int], n_target: int) -> list[tuple[float, float, bool]]:
    """OpenAI's ``echo`` with ``logprobs``: ``token_logprobs`` and ``top_logprobs`` per token, the prompt's first."""
    logprobs = choice["logprobs"]
    values, tops = logprobs["token_logprobs"], logprobs["top_logprobs"]
    if len(values) < len(tokens):
        raise ValueError(f"{len(values)} log-probabilities for {len(tokens)} prompt tokens")
    scored = []
    for position in range(len(tokens) - n_target, len(tokens)):
        value = float(values[position])
        best = max(float(v) for v in tops[position].values())
        scored.append((value, best, value >= best))
    return scored


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))
