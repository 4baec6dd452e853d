"""llamabench as an lm-eval model: lm-eval builds and scores the tasks, a llamabench backend runs the model.

Importing this module registers the model under the name ``llamabench``, so that
``simple_evaluate(model="llamabench", model_args="pretrained=DIR,dtype=float32")`` works; lm-eval 0.4.13
does not discover models through package entry points, so its command line needs the wrapper
``python -m llamabench.interop.lm_eval.cli``.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry with its own models only while it is empty)
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.utils import simple_parse_args_string

from llamabench.backends.base import Backend
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest, sampling_seed

# lm-eval's default for generate_until requests that set no max_gen_toks.
DEFAULT_MAX_GEN_TOKS = 256
# Settings that only matter when sampling, so greedy requests may carry them.
_SAMPLING_SETTINGS = {"temperature", "top_p", "top_k"}


def generation_request(context: str, gen_kwargs: dict[str, Any], seed: int | None = None) -> GenerationRequest:
    """lm-eval's ``generate_until`` arguments as a llamabench request: ``until``, ``max_gen_toks`` (or its
    aliases) and ``do_sample``; sampling runs at temperature 1 with ``seed``, so other sampling settings are
    refused."""
    settings = dict(normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKS))
    greedy = not settings.pop("do_sample")
    max_new_tokens, until = settings.pop("max_gen_toks"), tuple(settings.pop("until"))
    if greedy:
        settings = {key: value for key, value in settings.items() if key not in _SAMPLING_SETTINGS}
    elif settings.get("temperature", 1.0) == 1.0:
        settings.pop("temperature", None)
    if settings:
        raise LlamabenchError(
            f"generation settings {settings} are not supported: llamabench decodes greedily or samples at "
            "temperature 1, honouring until, max_gen_toks and do_sample"
        )
    return GenerationRequest(context, max_new_tokens, until, greedy, None if greedy else seed)


def _batch_size(value: int | str) -> int | str:
    """lm-eval's ``auto`` / ``auto:N`` / number as llamabench's ``auto`` / number."""
    return "auto" if str(value).startswith("auto") else int(value)


@register_model("llamabench")
class LlamabenchLM(LM):
    """lm-eval's model interface over a llamabench :class:`Backend`; ``seed`` seeds sampled generations."""

    def __init__(self, backend: Backend, seed: int = 0) -> None:
        super().__init__()
        self.backend = backend
        self.seed = seed

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> LlamabenchLM:
        """Load a checkpoint through llamabench's backend factory from lm-eval's model arguments: ``pretrained``
        (as ``--model``), ``device``, ``device_map``, ``dtype``, ``batch_size``, ``max_length``, ``kv_cache`` and
        ``trust_remote_code``."""
        from llamabench.backends.factory import load_backend
        from llamabench.config import RunConfig

        # lm-eval's own settings (--device, --batch_size) fill in what model_args leave out: model_args are the
        # user's words for this model, while lm-eval's --device has a default (cuda:0) of its own.
        options = {**{k: v for k, v in (additional_config or {}).items() if v is not None}, **arg_dict}
        model = options.pop("pretrained", None)
        options["batch_size"] = _batch_size(options.pop("batch_size", "auto"))
        options["trust_remote_code"] = bool(options.pop("trust_remote_code", False))
        config = RunConfig.from_keywords("--model llamabench", [], options).validate()
        return cls(load_backend(config, model))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> LlamabenchLM:
        """As :meth:`create_from_arg_obj`, from ``key=value,key=value``."""
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return self.backend.loglikelihood([LoglikelihoodRequest(*request.args) for request in requests])

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        scored = self.backend.loglikelihood_rolling([RollingRequest(request.args[0]) for request in requests])
        return [loglikelihood for loglikelihood, _ in scored]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy requests as they are; each sampled one seeded from the run's seed, its task, document and
        index, and its repeat number (lm-eval lists a request ``repeats`` times: each repeat is its own sample)."""
        seen: dict[tuple, int] = {}
        converted = []
        for request in requests:
            identity = (request.task_name, request.doc_id, request.idx, repr(request.args))
            repeat = seen[identity] = seen.get(identity, -1) + 1
            converted.append(generation_request(*request.args, seed=sampling_seed(self.seed, *identity, repeat)))
        return self.backend.generate(converted)
