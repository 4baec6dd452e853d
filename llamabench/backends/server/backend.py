"""A model served over HTTP by an OpenAI-compatible server (vLLM, SGLang, llama.cpp): ``--model
http://HOST:PORT/v1``.

Every request goes as token ids, computed here by the contract's rules (``base.py``) with the same helpers the
transformers backend uses (``common/token_backend.py``: the context/continuation split, left truncation, rolling
windows), so a server scores exactly the tokens the in-process engine scores. Scoring reads the prompt's
log-probabilities: vLLM's ``prompt_logprobs`` extra parameter, or the OpenAI ``echo`` with ``logprobs``; which one
the server has is probed once, when the backend connects. A server with neither still generates; a scoring task then
fails before any request with one line naming the task and the missing capability. A probe that fails for any
other reason than the server refusing the form (a timeout, a dropped connection, an answer that cannot be right)
stops the connection: it says nothing about which forms the server offers.

Every answer is checked before a number is taken from it (:func:`_check_answer`, :func:`_check_logprobs`): the
prompt tokens it says it scored and counted are those sent, it holds one log-probability per prompt position
(none for the first, which nothing precedes), it generated no more tokens than asked, and every log-probability
is finite, at most 0 and above :data:`NEGATIVE_INFINITY`. An answer that fails stops the run with one line naming
the server and what was wrong, and nothing of it is stored.

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

from llamabench import __version__
from llamabench.backends.base import BackendInfo, IdentityChanged, OnDone
from llamabench.backends.common.request_tokens import GenerationJob, RequestTokens
from llamabench.backends.common.score_items import ScoreItem
from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.common.token_backend import TokenBackend
from llamabench.backends.finite import NonFiniteError
from llamabench.backends.server.client import RequestRefused, RetryPolicy, ServerClient, ServerError, run_bounded
from llamabench.backends.server.tokens import LocalTokens, ServerTokens, Tokens, require_same_tokens
from llamabench.backends.server.url import NAME
from llamabench.errors import LlamabenchError

# The text whose log-probabilities identify the served weights (see the module docstring).
PROBE_TEXT = "The capital of France is Paris. 1 2 3 4 5, and the quick brown fox jumps over the lazy dog."
PROBE_DECIMALS = 2
# How far a probe value may move between two answers of the same served weights (batching and scheduling noise:
# about 1e-6 in fp32, a few 1e-3 in bf16) before the run stops as served by other weights.
PROBE_TOLERANCE = 0.01
# How prompt log-probabilities are asked for, in the order they are tried.
LOGPROB_FORMS = ("prompt_logprobs", "echo")
# A completions request must generate one token; the scored sequence (max_length + 1 tokens) plus that one must
# fit the server's context.
SERVER_ROOM = 2
# How vLLM and OpenAI write a log-probability of −∞ in JSON, which has no infinities: a value at or below it says
# the model gave the token no probability at all (a diverged model, or a token it cannot produce), never a number
# to sum. A log-probability above 0 is refused without tolerance: log-softmax computed as ``x - logsumexp`` is at
# most 0 in any floating-point format (logsumexp is at least the largest logit, and rounding is monotone).
NEGATIVE_INFINITY = -9999.0


class ImpossibleAnswer(LlamabenchError):
    """A server's answer that cannot be right (a positive log-probability, other tokens or counts than those
    sent): no number is taken from it, and it is not sent again."""


class _FormMissing(Exception):
    """The answer holds no prompt log-probabilities in the form asked: the server does not offer that form."""


class ServerBackend(TokenBackend):
    """A served model, driven through the completions API with at most ``max_in_flight`` requests at once."""

    engine_name = NAME
    progress_unit = "req"

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
        self.server_tokens = tokens
        self.tokens = RequestTokens(tokens.encode, tokens.prefix_token, max_length)
        self.model_id = model
        self.max_length = max_length
        self.server_context = server_context
        self.max_in_flight = max_in_flight
        self.version = _server_version(client)
        self.logprob_form = self._probe_logprob_form()
        self.probe = self._probe_answer()
        self.fingerprint = self._fingerprint(self.probe)
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
        if tokenizer:
            tokens: Tokens = LocalTokens(tokenizer)
            require_same_tokens(tokens, client, model, tokenizer)
        else:
            tokens = ServerTokens(client, model)
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
            tokenizer=self.server_tokens.identity,
            engine_name=self.engine_name,
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
            "server": self.client.base_url,  # without credentials (ServerClient)
            "requests_sent": self.client.sent,
            "requests_retried": self.client.retried,
        }

    def verify_identity(self) -> None:
        """Probe the served model again (see the module): the weights behind the name may have been swapped. The
        answer must match the one taken at connect within :data:`PROBE_TOLERANCE` at every position: compared
        value by value, not through the rounded fingerprint, so the same weights never fail on a value that
        rounds the other way, while other weights moving any probe value by more than the tolerance stop the run."""
        retries = self.client.retried
        probed = self._probe_answer()
        self.probed_after_retries = retries
        moved = len(probed) != len(self.probe) or any(
            abs(now - then) > PROBE_TOLERANCE for now, then in zip(probed, self.probe, strict=False)
        )
        if moved:
            raise IdentityChanged(
                f"server {self.client.base_url} now serves other weights under model "
                f"{self.model_id} (its probe answers differently than when the run connected: a redeploy?); nothing "
                "computed since the last agreeing probe was recorded or cached: rerun once the server is stable"
            )

    def _probe_answer(self) -> list[float]:
        """The served model's log-probabilities of :data:`PROBE_TEXT` (the prompt's, else a greedy completion's)."""
        probe_tokens = self.tokens.encode(PROBE_TEXT)
        if self.logprob_form is not None:
            return [value for value, _ in self._prompt_logprobs(probe_tokens, len(probe_tokens) - 1)]
        return self._greedy_logprobs(probe_tokens)

    def _fingerprint(self, answer: list[float]) -> str:
        """The cache identity's fingerprint: the served name, its context, the probe's tokens and its answer
        rounded to :data:`PROBE_DECIMALS`."""
        rounded = [round(value, PROBE_DECIMALS) + 0.0 for value in answer]  # + 0.0: no -0.0
        spelled = json.dumps([self.model_id, self.server_context, self.tokens.encode(PROBE_TEXT), rounded])
        return "server-" + hashlib.sha256(spelled.encode()).hexdigest()[:32]

    def _greedy_logprobs(self, prompt: list[int]) -> list[float]:
        body = {"model": self.model_id, "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 1}
        choice = self._complete(body)
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

    def score_items(self, items: list[ScoreItem], finished: OnDone, *, share_prefixes: bool) -> None:
        def score(item: ScoreItem) -> tuple[float, bool]:
            scored = self._prompt_logprobs(item.tokens, item.n_target)
            return math.fsum(value for value, _ in scored), all(greedy for _, greedy in scored)

        self._run(score, items, finished)

    def _prompt_logprobs(self, tokens: list[int], n_target: int) -> list[tuple[float, bool]]:
        """(log-probability, is-argmax) of each of the last ``n_target`` of ``tokens`` given those before it."""
        return [(own, greedy) for own, _, greedy in self._positions(tokens, n_target)]

    def _positions(self, tokens: list[int], n_target: int) -> list[tuple[float, float, bool]]:
        """(log-probability, best log-probability there, is-argmax) of each of the last ``n_target`` tokens."""
        form = self.logprob_form
        body: dict = {"model": self.model_id, "prompt": tokens, "max_tokens": 1, "temperature": 0}
        body |= {"prompt_logprobs": 1} if form == "prompt_logprobs" else {"echo": True, "logprobs": 1}
        answer = self.client.post("/completions", body)
        choice = self._checked(answer, body)
        read = _read_prompt_logprobs if form == "prompt_logprobs" else _read_echo_logprobs
        try:
            return read(choice, tokens, n_target, _usage(answer).get("completion_tokens"))
        except _FormMissing:
            raise
        except (ImpossibleAnswer, NonFiniteError) as exc:
            raise type(exc)(f"{self._whose()} answered {form} with {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ImpossibleAnswer(
                f"{self._whose()} answered without the prompt's log-probabilities ({form}: {type(exc).__name__} {exc})"
            ) from None

    def _complete(self, body: dict) -> dict:
        """The first choice of the completions answer to ``body``, checked against what ``body`` asked."""
        return self._checked(self.client.post("/completions", body), body)

    def _checked(self, answer: dict, body: dict) -> dict:
        """``answer``'s first choice, checked against what ``body`` asked (:func:`_check_answer`)."""
        choice = _choice(answer)
        problem = _check_answer(answer, choice, body["prompt"], body["max_tokens"])
        if problem:
            raise ImpossibleAnswer(f"{self._whose()} {problem}; no number is taken from it")
        return choice

    def _whose(self) -> str:
        return f"server {self.client.base_url} (model {self.model_id})"

    def _probe_logprob_form(self) -> str | None:
        """The first of :data:`LOGPROB_FORMS` the server answers, at the right positions, or None. Only a server
        refusing the form (a 4xx) or answering without it rules a form out; any other failure stops here."""
        probe = self.tokens.encode(PROBE_TEXT)
        for form in LOGPROB_FORMS:
            self.logprob_form = form
            try:
                scored = self._positions(probe, len(probe) - 1)
            except (RequestRefused, _FormMissing):
                continue
            if len(scored) == len(probe) - 1 and self._agrees_with_generation(probe, scored[-1][1]):
                return form
        return None

    def _agrees_with_generation(self, probe: list[int], best_last: float) -> bool:
        """Whether the prompt log-probabilities sit at the right positions: the best log-probability before the
        probe's last token, as the prompt form reports it, must be that of the token a greedy completion of the
        probe less its last token generates. A server that pairs each prompt token with the next position's
        distribution (llama-cpp-python's ``echo`` for a prompt without BOS) fails, and is not used for scoring."""
        body = {"model": self.model_id, "prompt": probe[:-1], "max_tokens": 1, "temperature": 0, "logprobs": 1}
        values = (self._complete(body).get("logprobs") or {}).get("token_logprobs") or []
        if not values or not isinstance(values[0], int | float):
            return False
        return math.isclose(float(values[0]), best_last, rel_tol=1e-3, abs_tol=1e-3)

    # -- generation ----------------------------------------------------------------------------

    def generate_jobs(self, jobs: list[GenerationJob], finished: OnDone) -> None:
        self._run(self._generate_one, jobs, finished)

    def _generate_one(self, job: GenerationJob) -> str:
        until = [stop for stop in job.until if stop]
        body: dict = {
            "model": self.model_id,
            "prompt": job.prompt,
            "max_tokens": job.max_new,
            "temperature": 0.0 if job.seed is None else 1.0,
            # Plain sampling at temperature 1, as the transformers backend does: servers' own defaults (llama.cpp's
            # top_k 40 and min_p 0.05) would otherwise narrow it.
            "top_p": 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "skip_special_tokens": True,
        }
        if until:
            body["stop"] = until
        if job.seed is not None:
            body["seed"] = job.seed
        text = self._complete(body).get("text")
        if not isinstance(text, str):
            raise ServerError(f"server {self.client.base_url} answered a completion without its text")
        return cut_at_stop(text, job.until)

    def chat_turn(self, text: str) -> str | None:
        return self.server_tokens.chat(text)

    def _run(self, work: Callable, items: list, finished: OnDone) -> None:
        """``work`` on each item, ``max_in_flight`` at a time; each finished item is reported at once (a batch of
        one), so a kill loses only the requests in flight. A result that needed a retry is used only after the
        server answers the identity probe as before (a retry may have reached a replaced server)."""

        def report(index: int, result) -> None:
            if self.client.retried != self.probed_after_retries:
                self.verify_identity()
            finished([index], [result])

        run_bounded(work, items, self.max_in_flight, report)


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


def _check_answer(answer: dict, choice: dict, prompt: list[int], max_tokens: int) -> str | None:
    """What is wrong with a completions answer, as far as the server reports it: the prompt tokens it scored or
    counted are not those sent, or it generated more tokens than asked; None when nothing is."""
    echoed = choice.get("prompt_token_ids")
    if echoed is not None and echoed != prompt:
        return f"scored other prompt tokens than the {len(prompt)} sent"
    usage = _usage(answer)
    counted, generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if counted is not None and counted != len(prompt):
        return f"counted {counted} prompt tokens for the {len(prompt)} sent"
    if generated is not None and generated > max_tokens:
        return f"generated {generated} tokens where at most {max_tokens} were asked"
    return None


def _usage(answer: dict) -> dict:
    """The answer's ``usage``, its counts kept where they are whole numbers."""
    usage = answer.get("usage")
    items = usage.items() if isinstance(usage, dict) else ()
    return {key: value for key, value in items if isinstance(value, int) and not isinstance(value, bool)}


def _check_logprobs(values: Sequence[float]) -> None:
    """Raise unless every value is a possible log-probability (see :data:`NEGATIVE_INFINITY`)."""
    for value in values:
        if not math.isfinite(value) or value <= NEGATIVE_INFINITY:
            raise NonFiniteError(
                f"log-probability {value!r} (not finite, or at or below {NEGATIVE_INFINITY:g}, how servers write "
                "−∞): there is no number to sum; the served model may have diverged"
            )
        if value > 0:
            raise ImpossibleAnswer(f"a positive log-probability {value!r}, which no model gives (at most 0)")


def _read_prompt_logprobs(
    choice: dict, tokens: list[int], n_target: int, generated: int | None
) -> list[tuple[float, float, bool]]:
    """vLLM's ``prompt_logprobs``: per prompt position (None first) ``{token id: {logprob, rank, ...}}``, holding
    the prompt's own token and the top 1."""
    positions = choice.get("prompt_logprobs")
    if positions is None:
        raise _FormMissing
    if len(positions) != len(tokens) or positions[0] is not None:
        raise ImpossibleAnswer(
            f"{len(positions)} prompt log-probabilities for the {len(tokens)} tokens sent (one per token, none for "
            "the first)"
        )
    _check_logprobs([float(entry["logprob"]) for candidates in positions[1:] for entry in candidates.values()])
    scored = []
    for position in range(len(tokens) - n_target, len(tokens)):
        candidates = positions[position]
        own = candidates[str(tokens[position])]
        best = max(float(entry["logprob"]) for entry in candidates.values())
        rank = own.get("rank")
        value = float(own["logprob"])
        scored.append((value, best, rank == 1 if isinstance(rank, int) else value >= best))
    return scored


def _read_echo_logprobs(
    choice: dict, tokens: list[int], n_target: int, generated: int | None
) -> list[tuple[float, float, bool]]:
    """OpenAI's ``echo`` with ``logprobs``: ``token_logprobs`` and ``top_logprobs`` per token, the prompt's first
    (None for its first token), then the ``generated`` tokens (as the answer's usage counts them; else 0 or 1)."""
    logprobs = choice.get("logprobs")
    if not logprobs or logprobs.get("token_logprobs") is None:
        raise _FormMissing
    values, tops = logprobs["token_logprobs"], logprobs["top_logprobs"]
    extra = len(values) - len(tokens)
    if (
        extra not in ((0, 1) if generated is None else (generated,))
        or len(tops) != len(values)
        or values[0] is not None
    ):
        raise ImpossibleAnswer(
            f"{len(values)} log-probabilities for the {len(tokens)} prompt tokens sent and the "
            f"{'0 or 1' if generated is None else generated} generated (one per token, none for the first)"
        )
    _check_logprobs([float(v) for v in values[1:]] + [float(v) for top in tops[1:] for v in top.values()])
    scored = []
    for position in range(len(tokens) - n_target, len(tokens)):
        value = float(values[position])
        best = max(float(v) for v in tops[position].values())
        scored.append((value, best, value >= best))
    return scored
