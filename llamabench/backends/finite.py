"""Numbers that are not numbers: a diverged checkpoint (NaN or infinite weights or activations) gives NaN or
infinite logits. ``argmax`` over them still names a token, and a NaN log-likelihood still sorts, so without a
check a diverged model would get an accuracy, a "greedy" continuation and a perplexity. Every scoring and
decoding pass calls :func:`require_finite` on what it is about to use; the run stops with one line before the
numbers reach a result, a chosen token or the request cache. Requests finished in earlier passes stay cached.

Torch-free at import (tensors are used through their methods): ``scoring`` imports it and must stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabench.errors import LlamabenchError

if TYPE_CHECKING:
    import torch

DIVERGED = "the checkpoint has diverged (NaN or infinite weights or activations); evaluate an earlier checkpoint"


class NonFiniteError(LlamabenchError):
    """A model produced NaN or infinite logits or log-probabilities: there is no number to report."""


def require_finite(values: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` unless every element of ``values`` is finite (one reduction, one sync)."""
    if not bool(values.isfinite().all()):
        raise NonFiniteError(f"the model produced non-finite {what}; {DIVERGED}")


class FiniteLogits:
    """A logits processor for transformers' ``generate``: stops at the first step whose scores are not all
    finite, before a token is chosen from them."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        require_finite(scores, "logits while generating")
        return scores
