"""The engines, by their ``--engine`` name, and the one place that decides which engine runs a model and with
which options. Adding an engine is one line in :data:`ENGINES`; the engine's own module holds the rest."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from llamabench.backends.engine import Engine
from llamabench.backends.hf.engine import HFEngine
from llamabench.backends.server.engine import ServerEngine
from llamabench.backends.vllm.engine import VLLMEngine
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.urls import is_server_url, shown

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (HFEngine(), VLLMEngine(), ServerEngine())}


def engine_of(config: RunConfig, model: str | None) -> Engine:
    """The engine that runs ``model``: a URL (``http://HOST:PORT/v1``) names a served model, anything else a
    checkpoint, which ``--engine`` runs."""
    name = ServerEngine.name if is_server_url(model) else config.engine
    if name not in ENGINES:
        raise LlamabenchError(f"--engine {name} is not one of {', '.join(ENGINES)}")
    if name == ServerEngine.name and not is_server_url(model):
        raise LlamabenchError(
            f"--engine server runs a served model: pass --model http://HOST:PORT/v1, not {shown(model)}"
        )
    return ENGINES[name]


def resolve(config: RunConfig, model: str | None) -> tuple[Engine, Any]:
    """The engine of ``model`` and its options, checked; a flag only other engines read, set on this run, is
    refused in one line naming the engines that read it."""
    engine = engine_of(config, model)
    defaults = {item.name: item.default for item in fields(RunConfig)}
    for other in ENGINES.values():
        for flag in other.flags():
            if flag not in engine.flags() and getattr(config, flag) != defaults[flag]:
                readers = [reader for reader, each in ENGINES.items() if flag in each.flags()]
                raise LlamabenchError(
                    f"--{flag.replace('_', '-')} applies to --engine {', '.join(readers)} only; model "
                    f"{shown(model) or '(the embedded default)'} runs on --engine {engine.name}"
                )
    return engine, engine.options(config)


def check_engines(config: RunConfig) -> None:
    """Every model's engine and options, before any task is read or any model loads."""
    for model in config.model or [None]:
        resolve(config, model)
