"""What a forward pass costs, in tokens, and the shapes that follow from it: which prompts to prefill together
and how many draft tokens a decoding step should verify.

A forward pass reads every weight once, whatever it computes, then spends time in proportion to the tokens in
its input, padding included. So its cost is ``fixed + tokens``, ``fixed`` being the tokens the machine could
compute while it reads the weights: (bytes per weight / memory bandwidth) / (flops per weight and token / flops
per second), independent of model size. Measured for SmolLM2-135M in fp32 on two CPU cores: a one-token step
takes 64 ms and each further token about 3.5 ms, so ``fixed`` is about 18 tokens; a GPU reads its memory ~30x
faster but computes ~1000x faster, and adds kernel-launch time, so there it is several hundred tokens.

Worked example: prompts of 200, 190, 20 and 15 tokens on a CPU prefill as two passes, [200, 190] and [20, 15]
(cost 2 x 18 + 400 + 40 = 476 tokens), not one pass padded to 200 (18 + 800 = 818 tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FIXED_TOKENS = {"cpu": 18, "cuda": 512}


def fixed_tokens(device: torch.device) -> int:
    """A forward pass's weight-reading time on ``device``, in tokens of compute (module docstring)."""
    return FIXED_TOKENS.get(device.type, FIXED_TOKENS["cuda"])


def prefill_chunks(lengths: Sequence[int], fixed: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into passes, each padded to its longest member, with the least total cost
    ``sum(fixed + members x longest)``. Longest first: an optimal grouping takes contiguous runs of the
    lengths sorted in decreasing order (a shorter prompt never pays for a longer one it could leave), so
    a dynamic programme over where the runs end finds it."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[j]: least cost of the first j prompts in that order
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + fixed + (end - start) * lengths[order[start]]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], len(order)
    while end:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


def draft_width(offered: Sequence[int], acceptance: Sequence[float], fixed: int) -> int:
    """How many draft tokens every row of a decoding pass carries (rows offering fewer are padded to it), chosen
    for the most expected tokens per unit of cost. With ``k`` draft tokens the pass costs ``fixed + rows x
    (1 + k)`` and yields, per row, its one sure token plus an expected ``p + p^2 + ... + p^m`` confirmed drafts,
    ``p`` its acceptance and ``m = min(k, offered)`` its drafts. Few rows make the weight reading dominate, so
    drafting pays; a full batch on a CPU is compute-bound and drafts would cost more than they save."""
    rows = len(offered)

    def rate(width: int) -> float:
        expected = sum(sum(p**i for i in range(1, min(width, n) + 1)) for n, p in zip(offered, acceptance, strict=True))
        return (rows + expected) / (fixed + rows * (1 + width))

    return max(range(max(offered, default=0) + 1), key=lambda width: (rate(width), -width))
