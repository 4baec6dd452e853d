"""What an engine is to the rest of llamabench: a name (``--engine NAME``), a typed record of the options it reads
(built from the run's configuration, whose fields are named as the flags), the checks of those options, and how
it opens a backend for one model. The registry (``registry.py``) lists the engines; nothing else names one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any, ClassVar

from llamabench.backends.base import Backend
from llamabench.config import RunConfig


class Engine(ABC):
    """One engine: ``options_type`` is a frozen dataclass whose fields are the ``RunConfig`` fields (the flags) this
    engine honours; a flag of another engine set on a run of this one is refused by the registry."""

    name: ClassVar[str]
    options_type: ClassVar[type]
    opening: ClassVar[str] = "loading the model"  # what a failure to open is reported as

    @classmethod
    def flags(cls) -> tuple[str, ...]:
        """The ``RunConfig`` fields this engine reads."""
        return tuple(item.name for item in fields(cls.options_type))

    def options(self, config: RunConfig) -> Any:
        """This engine's options of ``config``, checked (:meth:`check`): a one-line error naming the flag."""
        options = self.options_type(**{name: getattr(config, name) for name in self.flags()})
        self.check(options)
        return options

    def check(self, options: Any) -> None:  # noqa: B027 (optional: an engine without checks of its own)
        """Refuse, before any model loads, options this engine cannot run (one line naming the flag)."""

    @abstractmethod
    def open(self, options: Any, model: str | None) -> Backend:
        """The backend of ``model`` under ``options``; its caller closes it (``Backend.close``)."""
