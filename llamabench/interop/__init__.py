"""Interoperation with EleutherAI's lm-evaluation-harness (the optional ``lm-eval`` dependency)."""

# Task names that start with this run lm-eval's task of the rest of the name.
LM_EVAL_PREFIX = "lm_eval:"
