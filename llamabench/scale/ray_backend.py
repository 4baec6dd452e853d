"""Ray as the cluster engine: ``llamabench run --ray ADDRESS`` (``--ray local`` starts a cluster on 127.0.0.1).

The driver (the ``llamabench run`` process) prepares the tasks, owns the request cache and the run store, and
scores; Ray actors (:class:`Replica`), each holding one loaded backend and declaring its resources (one GPU per
replica on a GPU cluster, one CPU otherwise), answer batches of requests. :class:`RayBackend` is the backend the
driver sees: it deals each call's requests out in batches, collects them as they finish (``ray.wait``) and calls
``on_done`` on the driver, so the :class:`~llamabench.backends.wrappers.cache.CachedBackend` around it stores
every finished batch at once: a driver killed and started again recomputes only the batches in flight.

A lost worker: its actor is restarted (the model loads again) and the batch it held is run again (Ray's actor task
retry, then once more on any replica); results are kept by request index, so a batch answered twice counts once.

Identity: every batch comes back with the cache identity of the replica that computed it, as that replica loaded
its model. A replica restarted on other weights (the checkpoint folder rewritten meanwhile) answers under another
identity: the driver uses none of its results and stops the run (``IdentityChanged``). ``verify_identity`` asks
every replica to check its own engine (its weight files hashed again) and to say its identity.

Ray stays optional: nothing in the core imports this module; ``pipeline.py`` does when ``--ray`` is given.

    evaluation = Evaluation.prepare(RunConfig(tasks=["ppl"], ray="local"))
    run = evaluation.run_checkpoint("out/checkpoint-500")    # two CPUs: two replicas share the requests
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from llamabench.backends.base import Backend, BackendInfo, IdentityChanged, OnDone
from llamabench.backends.registry import engine_of
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest, request_size
from llamabench.urls import shown

LOCAL = "local"
# Batches dealt per replica in one call (more: finer streaming and balance, more round trips), and their cap.
BATCHES_PER_REPLICA = 4
MAX_BATCH = 256
# Batches each replica holds at once: one running, one waiting, so a replica never idles on a round trip.
IN_FLIGHT = 2
# How many times a batch whose replica died is dealt again, after Ray's own retries.
RESUBMITS = 3


def import_ray():
    try:
        import ray
    except ModuleNotFoundError as exc:
        if (exc.name or "") != "ray":
            raise
        raise LlamabenchError("--ray needs Ray; install it with pip install 'llamabench[ray]'") from exc
    return ray


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), or with ``local`` start
    one on 127.0.0.1 with this machine's CPUs and GPUs; a process already connected stays connected."""
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        if address == LOCAL:
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise LlamabenchError(
            f"--ray {address}: cannot reach the Ray cluster ({' '.join(str(exc).split())[:200]}); give the head's "
            "address (ray status prints it) or --ray local"
        ) from exc


def free_slots(config: RunConfig) -> tuple[int, dict]:
    """How many replicas the cluster holds now, and the resources each declares: a GPU each where the cluster
    has GPUs and ``--device`` does not say cpu, else a CPU each."""
    ray = import_ray()
    available = ray.available_resources()
    gpus = int(available.get("GPU", 0))
    if gpus and not (config.device or "").startswith("cpu"):
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    return max(1, int(available.get("CPU", 1))), {"num_gpus": 0, "num_cpus": 1}


def run_checkpoints(evaluation, models: list[str | None]):
    """Each of ``models`` evaluated by ``evaluation`` (its ``--ray`` cluster), the checkpoints in parallel: one
    driver thread per checkpoint, the cluster's free slots shared among them (at least one replica each); yields
    the runs in the order of ``models``. The threads share the driver's request cache (one call at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    connect(evaluation.config.ray)
    slots, _ = free_slots(evaluation.config)
    parallel = max(1, min(len(models), slots))
    replicas = max(1, slots // parallel)
    with ThreadPoolExecutor(parallel, thread_name_prefix="llamabench-ray") as pool:
        yield from pool.map(lambda model: evaluation.run_checkpoint(model, replicas=replicas), models)


class Replica:
    """One loaded backend in a Ray actor: answers batches of one call kind (made a Ray actor class on use)."""

    def __init__(self, config: RunConfig, model: str | None):
        from llamabench.backends.factory import load_backend

        # A load that fails is raised by the replica's first call, not here: Ray turns an error in an actor's
        # creation into ActorDiedError, which carries only a formatted traceback, while a call's error reaches the
        # driver as the exception itself (RayTaskError.cause), so the driver can say it in one line.
        self._failure: Exception | None = None
        try:
            self._backend = load_backend(config, model)
            self._backend.progress = False
        except Exception as exc:  # noqa: BLE001 (every kind is handed on whole, by the first call)
            self._failure = exc

    @property
    def backend(self) -> Backend:
        if self._failure is not None:
            raise self._failure
        return self._backend

    def run(self, kind: str, requests: list[Request]) -> tuple[list, str, str]:
        """The answers, with the fingerprint and cache identity of the model that computed them."""
        return getattr(self.backend, kind)(requests), self.backend.fingerprint, self.backend.cache_identity()

    def verify_identity(self) -> tuple[str, str]:
        """This replica's engine checked (:meth:`Backend.verify_identity`); its fingerprint and cache identity."""
        self.backend.verify_identity()
        return self.backend.fingerprint, self.backend.cache_identity()

    def identity(self) -> tuple[str, str, BackendInfo, str]:
        return self.backend.model_id, self.backend.fingerprint, self.backend.info(), self.backend.cache_identity()

    def truncated_tokens(self, requests: list[Request]) -> list[int | None]:
        return self.backend.truncated_tokens(requests)

    def apply_chat_template(self, text: str) -> str:
        return self.backend.apply_chat_template(text)

    def require_generation(self, task: str | None) -> None:
        self.backend.require_generation(task)

    def require_loglikelihoods(self, task: str | None) -> None:
        self.backend.require_loglikelihoods(task)

    def statistics(self) -> dict:
        return self.backend.statistics()

    def pid(self) -> int:
        import os

        return os.getpid()


class RayBackend(Backend):
    """``replicas`` Ray actors of one model, seen by the driver as one backend (see the module)."""

    def __init__(self, replicas: list, address: str):
        ray = import_ray()
        self.replicas = replicas
        self.address = address
        self.model_id, self.fingerprint, self._info, self._identity = ray.get(replicas[0].identity.remote())
        self.batches = 0
        self.resubmitted = 0

    @classmethod
    def start(cls, config: RunConfig, model: str | None, replicas: int | None = None) -> RayBackend:
        """Connect to ``config.ray`` and load ``model`` in ``replicas`` actors (default: one per free slot)."""
        connect(config.ray)
        ray = import_ray()
        slots, resources = free_slots(config)
        count = slots if replicas is None else replicas
        actor = ray.remote(max_restarts=-1, max_task_retries=-1, **resources)(Replica)
        # An actor on a GPU sees only its own GPU, as cuda:0; on CPU every actor runs one thread.
        # (A served model takes no --device: its server decides where it runs.)
        devices = (
            {"device": "cuda" if resources["num_gpus"] else "cpu"}
            if "device" in engine_of(config, model).flags()
            else {}
        )
        worker_config = replace(config, ray=None, shard=None, **devices)
        handles = [actor.remote(worker_config, model) for _ in range(count)]
        try:
            return cls(handles, config.ray)
        except ray.exceptions.RayTaskError as exc:  # the model failed to load: say why in one line
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            for handle in handles:
                ray.kill(handle)
            if isinstance(cause, LlamabenchError):
                raise cause from None
            raise LlamabenchError(
                f"--ray: a replica failed to load {shown(model)}: {type(cause).__name__}: {cause}"
            ) from exc

    def close(self) -> None:
        """Stop the replicas (their slots go back to the cluster)."""
        ray = import_ray()
        for handle in self.replicas:
            ray.kill(handle)

    def pids(self) -> list[int]:
        """The worker processes' ids (tests kill one)."""
        ray = import_ray()
        return ray.get([handle.pid.remote() for handle in self.replicas])

    # Backend contract: the replica's own answers for everything that runs no model.
    def info(self) -> BackendInfo:
        return self._info

    def cache_identity(self) -> str:
        return self._identity

    def verify_identity(self) -> None:
        ray = import_ray()
        answers = self._unwrap(lambda: ray.get([handle.verify_identity.remote() for handle in self.replicas]))
        for replica, (fingerprint, identity) in enumerate(answers):
            self._require_identity(replica, fingerprint, identity)

    def _require_identity(self, replica: int, fingerprint: str, identity: str) -> None:
        """Raise unless replica ``replica``'s model is the run's (a restarted replica loads the checkpoint again)."""
        if identity == self._identity:
            return
        what = (
            f"fingerprint {fingerprint}, not the run's {self.fingerprint}"
            if fingerprint != self.fingerprint
            else ("the same weights under other settings")
        )
        raise IdentityChanged(
            f"--ray: replica {replica} of model {self.model_id} now computes with another model ({what}; was it "
            "restarted after the checkpoint was rewritten?); nothing it computed was recorded or cached: rerun "
            "once the checkpoint stays unchanged"
        )

    def truncated_tokens(self, requests: Sequence[Request]) -> list[int | None]:
        return import_ray().get(self.replicas[0].truncated_tokens.remote(list(requests)))

    def apply_chat_template(self, text: str) -> str:
        return self._unwrap(lambda: import_ray().get(self.replicas[0].apply_chat_template.remote(text)))

    def require_generation(self, task: str | None = None) -> None:
        self._unwrap(lambda: import_ray().get(self.replicas[0].require_generation.remote(task)))

    def require_loglikelihoods(self, task: str | None = None) -> None:
        self._unwrap(lambda: import_ray().get(self.replicas[0].require_loglikelihoods.remote(task)))

    def statistics(self) -> dict:
        return {
            "ray": {
                "address": self.address,
                "replicas": len(self.replicas),
                "batches": self.batches,
                "resubmitted": self.resubmitted,
            }
        }

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        return [tuple(result) for result in self._spread("loglikelihood", requests, on_done)]

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        return [tuple(result) for result in self._spread("loglikelihood_rolling", requests, on_done)]

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        return self._spread("generate", requests, on_done)

    def _spread(self, kind: str, requests: Sequence[Request], on_done: OnDone | None) -> list:
        """Deal the requests out in batches (longest first), each replica holding IN_FLIGHT at a time; collect
        each batch as it finishes, report it through ``on_done`` once, and deal a lost batch again."""
        ray = import_ray()
        order = sorted(range(len(requests)), key=lambda i: -request_size(requests[i]))
        size = min(MAX_BATCH, max(1, math.ceil(len(order) / (BATCHES_PER_REPLICA * len(self.replicas)))))
        waiting = [order[start : start + size] for start in range(0, len(order), size)]
        results: list = [None] * len(requests)
        answered = [False] * len(requests)
        running: dict = {}  # object ref -> (batch, replica, tries)
        load = [0] * len(self.replicas)

        def submit(batch: list[int], tries: int) -> None:
            replica = min(range(len(self.replicas)), key=lambda r: (load[r], r))
            ref = self.replicas[replica].run.remote(kind, [requests[i] for i in batch])
            running[ref] = (batch, replica, tries)
            load[replica] += 1

        while waiting or running:
            while waiting and min(load) < IN_FLIGHT:
                submit(waiting.pop(0), 0)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            batch, replica, tries = running.pop(ref)
            load[replica] -= 1
            try:
                answers, fingerprint, identity = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the model raised: the run fails as it would in-process
                raise (exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc) from None
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError):
                if tries >= RESUBMITS:
                    raise
                self.resubmitted += 1
                submit(batch, tries + 1)
                continue
            self._require_identity(replica, fingerprint, identity)  # before any of its answers is used
            self.batches += 1
            new = [(i, answer) for i, answer in zip(batch, answers, strict=True) if not answered[i]]
            for i, answer in new:
                results[i], answered[i] = answer, True
            if on_done is not None and new:
                on_done([i for i, _ in new], [answer for _, answer in new])
        return results

    def _unwrap(self, call):
        """A replica's call, its own exception (a LlamabenchError) raised here as if it ran in this process."""
        ray = import_ray()
        try:
            return call()
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
