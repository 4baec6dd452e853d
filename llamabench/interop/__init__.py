"""Interoperation with EleutherAI's lm-evaluation-harness (the optional ``lm-eval`` dependency)."""

from llamabench.config import LM_EVAL_PREFIX

__all__ = ["LM_EVAL_PREFIX"]
