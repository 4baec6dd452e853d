"""What the benchmark scripts share: where the public data is, lm-eval request objects, and the rule every timed
figure obeys.

The rule: a timed run counts only the work it computed itself, in that run. Nothing it is timed for may come from
a request cache (llamabench's ``no_cache=True``, lm-eval's ``use_cache`` off), from a memo or warm result left by
an earlier run (a warm-up, an earlier repeat, another job on the same engine), or from anything else computed
outside the timer. What an engine shares between the requests of the one timed run (llamabench's prompt prefixes,
vLLM's prefix cache filled by that run's own prompts) is the engine's own work and counts; vLLM's prefix cache is
emptied before every timed run so that nothing an earlier run left in it is reused. Each run records its own
counters (:class:`TimedRun`), counted while it runs by :class:`Meter`, and prints them beside its time; a ratio
between two runs is printed by :func:`compare` only when both did their full work and the same work, otherwise one
line says why not; best-of-N picks (:func:`fastest`) only among runs that did their full work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# The request methods of llamabench's backends and of lm-eval's models: what a Meter counts the requests of.
LLAMABENCH_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate")
LM_EVAL_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
# Two greedy generations of the same prompts that part at a near-tie differ in length a little: kept tokens within
# this fraction of each other are the same work (compare's work_tolerance for generation).
GENERATION_TOLERANCE = 0.05


def default_data_dir() -> Path:
    """``$LLAMABENCH_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("LLAMABENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def instances(kind: str, arguments: list[tuple]) -> list:
    """lm-eval requests of one ``kind`` (``loglikelihood_rolling``, ``generate_until``, ...), one per tuple."""
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


@dataclass(frozen=True)
class TimedRun:
    """One timed run of one side and the work it did itself, counted while it ran.

    ``job`` and ``side`` name the work and who did it. ``requests`` is what the run had to answer (documents,
    choices, prompts, files, rows); ``computed`` how many of them it answered by computing them in this run (not
    read from a cache or a memo); ``work`` the units a ratio is per (tokens scored or generated, bytes hashed,
    rows stored), in ``unit``. ``forwards`` and ``positions`` are the model's forward passes and the token
    positions they computed (rows x width, padding and draft tokens included); None where the work has no model
    or the engine does not expose them."""

    job: str
    side: str
    seconds: float
    requests: int
    computed: int
    work: int
    unit: str
    forwards: int | None = None
    positions: int | None = None

    def shortfall(self) -> str | None:
        """Why this run did not do its full work itself, or None when it did."""
        if self.requests <= 0 or self.work <= 0:
            return f"{self.side} did no work ({self.requests} requests, {self.work} {self.unit})"
        if self.computed < self.requests:
            served = self.requests - self.computed
            return f"{self.side} computed {self.computed} of {self.requests} requests ({served} served from a cache)"
        if self.forwards == 0:
            return f"{self.side} ran 0 forward passes for {self.work} {self.unit}"
        if self.positions is not None and self.positions < self.work:
            return f"{self.side} computed {self.positions} positions, fewer than its {self.work} {self.unit}"
        return None

    def line(self) -> str:
        """The run's time and its counters, as printed beside every timed figure."""
        counts = [f"{self.computed}/{self.requests} requests computed", f"{self.work} {self.unit}"]
        if self.forwards is not None:
            counts.append(f"{self.forwards} forward passes")
        if self.positions is not None:
            counts.append(f"{self.positions} positions computed")
        return f"{self.job} {self.side}: {self.seconds:.2f} s; " + ", ".join(counts)


@dataclass(frozen=True)
class Comparison:
    """A ratio of throughputs (``other`` over ``base``), or the reason none is printed."""

    label: str
    ratio: float | None
    reason: str | None

    def line(self) -> str:
        if self.ratio is None:
            return f"{self.label}: no ratio: {self.reason}"
        return f"{self.label}: {self.ratio:.2f}x"


def compare(label: str, base: TimedRun, other: TimedRun, *, work_tolerance: float = 0.0) -> Comparison:
    """``other``'s throughput (``work`` per second) over ``base``'s, when both runs computed all their requests
    themselves, answered the same number of requests and did the same work: equal, or within ``work_tolerance``
    (a fraction; generations that part at a near-tie differ in length by a little)."""
    reason = base.shortfall() or other.shortfall()
    if reason is None and base.unit != other.unit:
        reason = f"{base.side} counts {base.unit}, {other.side} {other.unit}"
    if reason is None and base.requests != other.requests:
        reason = f"{base.side} answered {base.requests} requests, {other.side} {other.requests}"
    if reason is None and abs(base.work - other.work) > work_tolerance * max(base.work, other.work):
        reason = f"{base.side} did {base.work} {base.unit}, {other.side} {other.work}: not the same work"
    if reason is None and min(base.seconds, other.seconds) <= 0:
        reason = "a run took no measurable time"
    if reason is not None:
        return Comparison(label, None, reason)
    return Comparison(label, (other.work / other.seconds) / (base.work / base.seconds), None)


def total(runs: list[TimedRun]) -> TimedRun:
    """One side's slices of one job (the sides alternating slice by slice) as one run: times and counters summed."""

    def summed(field: str) -> int | None:
        values = [getattr(run, field) for run in runs]
        return None if None in values else sum(values)

    first = runs[0]
    return TimedRun(
        first.job,
        first.side,
        sum(run.seconds for run in runs),
        summed("requests"),
        summed("computed"),
        summed("work"),
        first.unit,
        summed("forwards"),
        summed("positions"),
    )


def fastest(runs: Iterable[TimedRun]) -> TimedRun:
    """The fastest of one side's repeated runs among those that did their full work; the first run when none did
    (its :meth:`TimedRun.shortfall` then refuses every ratio it is in)."""
    runs = list(runs)
    full = [run for run in runs if run.shortfall() is None]
    return min(full, key=lambda run: run.seconds) if full else runs[0]


class Meter:
    """Times one run (a ``with`` block) and counts, meanwhile, the work its side does itself.

    ``model``: a transformers model whose base model's forward passes and positions are counted (every path
    through it, scoring or generation, runs the base model once per pass). ``answerer`` and ``methods``: the
    object whose request methods are counted, each request handed to them once (a call nested in another is not
    counted again). Counting below any cache: a request served from a cache never reaches them. ``vllm``: a vLLM
    ``LLM`` whose prefix cache is emptied as the run starts, and whose outputs give the positions computed (prompt
    tokens not found in the prefix cache, plus generated tokens). ``synchronize`` runs at both ends of the timer
    (a GPU's queued kernels)."""

    def __init__(
        self,
        *,
        model=None,
        answerer=None,
        methods: Iterable[str] = (),
        vllm=None,
        synchronize: Callable[[], None] = lambda: None,
    ):
        self.model, self.answerer, self.methods, self.synchronize = model, answerer, tuple(methods), synchronize
        self.vllm = vllm
        self.requests = 0
        self.forwards: int | None = 0 if model is not None else None
        self.positions: int | None = 0 if model is not None or vllm is not None else None
        self.prefix_cached = 0  # vLLM prompt tokens this run's own earlier prompts left in its prefix cache
        self.seconds = 0.0
        self._undo: list[Callable[[], None]] = []
        self._depths: dict[int, list[int]] = {}

    def __enter__(self) -> Meter:
        if self.model is not None:
            handle = self.model.base_model.register_forward_pre_hook(self._count_forward, with_kwargs=True)
            self._undo.append(handle.remove)
        for name in self.methods:
            if hasattr(self.answerer, name):
                self._wrap(self.answerer, name, self._count_requests)
        if self.vllm is not None:
            if not self.vllm.reset_prefix_cache():  # nothing an earlier run left there is reused
                raise RuntimeError("vLLM did not empty its prefix cache before a timed run")
            self._wrap(self.vllm, "generate", self._count_vllm)
        self.synchronize()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.synchronize()
        self.seconds = time.perf_counter() - self._start
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def record(
        self, job: str, side: str, requests: int, work: int, unit: str, *, computed: int | None = None
    ) -> TimedRun:
        """The run's :class:`TimedRun`: ``requests`` it had to answer, ``work`` done in ``unit``; ``computed``,
        counted by the caller, where this meter counts no request methods."""
        if self.methods:
            computed = self.requests
        if computed is None:
            raise ValueError("a run's computed requests must be counted: give the meter methods, or computed=")
        return TimedRun(
            job=job,
            side=side,
            seconds=self.seconds,
            requests=requests,
            computed=computed,
            work=work,
            unit=unit,
            forwards=self.forwards,
            positions=self.positions,
        )

    def _count_forward(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        shaped = ids if ids is not None else kwargs["inputs_embeds"]
        self.forwards += 1
        self.positions += int(shaped.shape[0] * shaped.shape[1])

    def _count_requests(self, requests, result) -> None:
        self.requests += len(requests)

    def _count_vllm(self, prompts, outputs) -> None:
        for output in outputs:
            cached = output.num_cached_tokens or 0
            self.prefix_cached += cached
            self.positions += len(output.prompt_token_ids) - cached + sum(len(o.token_ids) for o in output.outputs)

    def _wrap(self, owner, name: str, count: Callable) -> None:
        """Replace ``owner.name`` for the run by a version that calls ``count(requests, result)`` on the outermost
        call; restored on exit."""
        inner = getattr(owner, name)
        own = vars(owner).get(name)  # an instance attribute already there (another patch) is put back
        depth = self._depths.setdefault(id(owner), [0])  # a method calling another of the owner's: counted once

        def counted(requests, *args, **kwargs):
            depth[0] += 1
            try:
                result = inner(requests, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                count(requests, result)
            return result

        setattr(owner, name, counted)
        self._undo.append(lambda: setattr(owner, name, own) if own is not None else delattr(owner, name))
